# shopmesh: every command a user or CI runs. `make` alone lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

UV_VERSION := 0.13.8
TOOLS := $(CURDIR)/.tools
BIN := $(TOOLS)/bin
UV := $(TOOLS)/uv/bin/uv
VENV := $(CURDIR)/.venv
BUILD := $(CURDIR)/.build
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# --- tools -------------------------------------------------------------------
# Everything lands in git-ignored folders (.tools, .venv, node_modules) and is
# rebuilt only when its pin changes, so a second `make tools` installs nothing.

$(UV):
	python3.11 -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: requirements-dev.lock pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python python3.11 $(VENV)
	$(UV) pip sync --quiet --python $(PY) --require-hashes requirements-dev.lock
	$(UV) pip install --quiet --python $(PY) --no-deps --editable .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Jaeger v2 is built from its Go module (pinned in tools/jaeger/go.mod); the
# first build takes several minutes, the Go build cache makes later ones fast.
$(BIN)/jaeger: tools/jaeger/go.mod tools/jaeger/go.sum
	cd tools/jaeger && GOBIN=$(BIN) go install tool
	touch $@

$(BIN)/.go-tools: tools/go/go.mod tools/go/go.sum
	cd tools/go && GOBIN=$(BIN) go install tool
	touch $@

$(BIN)/kustomize: tools/kustomize/go.mod tools/kustomize/go.sum
	cd tools/kustomize && GOBIN=$(BIN) go install tool
	touch $@

.PHONY: tools
tools: $(VENV)/.synced node_modules/.installed $(BIN)/jaeger $(BIN)/.go-tools $(BIN)/kustomize ## Install every pinned tool (Python, Node, Jaeger, grpcurl, ghz, buf, nats-server, kustomize)

# The console's browser test (tests/console) drives Debian's chromium with
# npm's playwright-core (a pinned dev dependency, installed by `make tools`);
# the browser is installed into the system when missing (needs root).
.PHONY: browser-tools
browser-tools: ## Install Debian's chromium for the console's browser test when missing (needs root)
	if [[ "$$(dpkg-query -W -f='$${Status}' chromium 2>/dev/null)" != "install ok installed" || ! -x /usr/bin/chromium ]]; then \
	  apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	fi
	test -x /usr/bin/chromium
	dpkg-query -W chromium

# --- services that compile ----------------------------------------------------
# inventory (Go) and payments (TypeScript) are built into git-ignored folders;
# compose.yaml's x-local entries run these outputs. Each rebuilds only when a
# source changes; Go's build cache keeps a rebuild under a second.

INVENTORY_BIN := $(BUILD)/bin/inventory
INVENTORY_SRC := $(shell find services/inventory gen/go -type f \( -name '*.go' -o -name 'go.*' -o -name '*.json' \) 2>/dev/null)
PAYMENTS_JS := services/payments/dist/services/payments/src/main.js
PAYMENTS_SRC := $(shell find services/payments/src services/payments/test services/payments/testing gen/ts -type f -name '*.ts' 2>/dev/null) services/payments/tsconfig.json services/payments/package.json

$(INVENTORY_BIN): $(INVENTORY_SRC)
	cd services/inventory && go build -o $@ .

$(PAYMENTS_JS): $(PAYMENTS_SRC) node_modules/.installed
	npx --no-install tsc -p services/payments/tsconfig.json
	touch $@

# The grpc-go echo server, an anchor of bench/anchors.md, and the grpc-go
# proxy that bench/gateway.md puts beside the Python ones (a module of their own).
ECHO_GO_SRC := $(wildcard bench/echo-go/*.go bench/echo-go/*/*.go) bench/echo-go/go.mod bench/echo-go/go.sum
ECHO_GO_BIN := $(BUILD)/bin/echo-go
$(ECHO_GO_BIN): $(ECHO_GO_SRC)
	cd bench/echo-go && go build -o $@ .
PROXY_GO_BIN := $(BUILD)/bin/proxy-go
$(PROXY_GO_BIN): $(ECHO_GO_SRC)
	cd bench/echo-go && go build -o $@ ./proxy

# The console's web page (services/console/web): esbuild bundles it into
# services/console/console/static/ (index.html, style.css, app.js), which the
# console serves, and its unit tests into services/console/web/dist/test/.
# Both git-ignored; a build takes well under a second, so it runs every time.
.PHONY: console-web
console-web: node_modules/.installed ## Bundle the console's web page into services/console/console/static
	node services/console/web/build.mjs

.PHONY: build
build: $(INVENTORY_BIN) $(PAYMENTS_JS) console-web ## Build the Go and TypeScript services and the console's web page

# requirements.lock: what the service images install; requirements-dev.lock:
# that plus the tools and test dependencies. Both pin every package by hash.
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet \
  --custom-compile-command "make lock"

.PHONY: lock
lock: | $(UV) ## Re-resolve Python dependencies into the hashed lock files
	$(UV) pip compile pyproject.toml $(LOCK_FLAGS) -o requirements.lock
	$(UV) pip compile pyproject.toml --group dev $(LOCK_FLAGS) -o requirements-dev.lock

# --- contracts ---------------------------------------------------------------

.PHONY: protos
protos: tools ## Generate Python, Go and TypeScript stubs from protos/
	scripts/gen-protos.sh

.PHONY: check-generated
check-generated: tools ## Fail if gen/ differs from what protos/ generates
	scripts/check-generated.sh

.PHONY: protos-baseline
protos-baseline: tools ## Record the current contracts as the baseline `buf breaking` compares with
	$(VENV)/bin/buf build --exclude-source-info -o protos/baseline.json

# --- checks ------------------------------------------------------------------

GO_MODULES := gen/go services/inventory tests/contract/wire/go bench/echo-go

.PHONY: lint
lint: tools ## Static checks: ruff, mypy, buf lint/breaking, gofmt, go vet, tsc
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/buf lint
	$(VENV)/bin/buf breaking --against protos/baseline.json
	test -z "$$(gofmt -l $(GO_MODULES))" || { gofmt -l $(GO_MODULES); exit 1; }
	for module in $(GO_MODULES); do (cd $$module && go vet ./...); done
	npx --no-install tsc --noEmit -p tsconfig.json
	npx --no-install tsc --noEmit -p tests/contract/wire/ts/tsconfig.json
	npx --no-install tsc --noEmit -p services/payments/tsconfig.json
	npx --no-install tsc --noEmit -p services/console/web/tsconfig.json

.PHONY: test
test: lint build ## Run every check and test: lint, unit, contract, end to end, README
	cd services/inventory && go test -race -count=1 ./...
	node --test services/payments/dist/services/payments/test/
	node --test services/console/web/dist/test/
	# pytest exits 5 when it collected nothing: that is a failure here.
	$(PY) -m pytest $(PYTEST_ARGS) || { rc=$$?; [[ $$rc -eq 5 ]] && echo "pytest collected no tests" >&2; exit $$rc; }

# --- running -----------------------------------------------------------------

.PHONY: up
up: tools build ## Start Jaeger and the services as local processes (logs in .run/logs)
	$(PY) -m localmode up

.PHONY: down
down: ## Stop what `make up` started
	@if [[ -x $(PY) ]]; then $(PY) -m localmode down; else echo "nothing to stop"; fi

# `make up` starts only what is not running, so the demo also brings back a
# service that died (or one added since the mesh was started).
.PHONY: demo
demo: tools build ## Bring the mesh up, tell the shop's story through the gateway, print its traces
	$(MAKE) up
	$(PY) -m demo

# The token is the last line of the output: $(make -s token | tail -1).
SUB ?= cus-demo
.PHONY: token
token: $(VENV)/.synced ## Print a JWT the gateway accepts for an hour: make token [SUB=<customer-id>]
	$(PY) -m gateway.token --sub '$(SUB)' --ttl 3600

.PHONY: trace
trace: ## Print the span tree of one trace from Jaeger: make trace ID=<trace-id>
	@[[ -n "$(ID)" ]] || { echo "usage: make trace ID=<trace-id>" >&2; exit 2; }
	$(PY) -m tracing $(ID)

# The mesh's CA and one certificate per service (mesh/certs.py) in
# MESH_CERTS_DIR (.run/certs by default): what is missing or due is made, the
# rest kept; ROTATE=1 issues every service certificate again under the same CA.
.PHONY: certs
certs: $(VENV)/.synced ## Make the mesh's CA and service certificates that are missing or due: make certs [ROTATE=1]
	$(PY) -m mesh.certs $(if $(filter 1 yes true,$(ROTATE)),--rotate)

# Faults injected at run time (mesh/faultctl.py) into faults/faults.yaml,
# which every service of `make up` and of compose reads again within a
# second: make fault SERVICE=payments DELAY_MS=300; make fault
# SERVICE=inventory ERROR_RATIO=0.3 [CODE=UNAVAILABLE] [METHOD=ReserveStock];
# make fault CLEAR=1 [SERVICE=...]; make fault alone shows what is in force.
.PHONY: fault
fault: $(VENV)/.synced ## Inject or clear a fault at run time: make fault SERVICE=payments DELAY_MS=300 | ERROR_RATIO=0.3 | CLEAR=1
	$(PY) -m mesh.faultctl $(if $(filter 1 yes true,$(CLEAR)),clear $(SERVICE) $(if $(METHOD),--method '$(METHOD)'),$(if $(SERVICE),set $(SERVICE) --delay-ms '$(or $(DELAY_MS),0)' --error-ratio '$(or $(ERROR_RATIO),0)' --code '$(or $(CODE),UNAVAILABLE)' --method '$(or $(METHOD),*)',show))

# --- docker ------------------------------------------------------------------
# compose.yaml reads its keys from a git-ignored .env; compose-env writes one
# with random keys when there is none. compose-test builds the images and runs
# the real compose.yaml (tests/compose); where no Docker engine or registry is
# available it installs and starts the project's own (scripts/docker/).

.PHONY: compose-env
compose-env: ## Write .env with random keys for docker compose (kept if it exists)
	python3 scripts/docker/make-env.py .env

.PHONY: compose-test
compose-test: tools ## Build the images, run compose.yaml and test it from the host (needs root here)
	scripts/docker/compose-test.sh

# etcd, Kubernetes and CoreDNS built from their Go modules (cached in
# /var/cache/shopmesh-k8s), Debian's containerd and CNI plugins: a real
# single-node cluster runs overlays/local, tested through kubectl port-forward.
.PHONY: k8s-test
k8s-test: tools ## Run the shop on a real single-node Kubernetes cluster and test it (needs root here)
	scripts/kubernetes/k8s-test.sh

# nginx is the reference gateway `make bench` compares ours with (grpc_pass):
# Debian's package unpacked into .tools/nginx, never installed into the system
# (the binary needs only libc, libcrypt, libpcre2, libssl and zlib, which the
# base image has; nginx-common holds nothing but /etc files the bench does not
# use). The stamp names the pin, so a new pin unpacks afresh.
NGINX_VERSION := 1.22.1
NGINX_DEB_VERSION := $(NGINX_VERSION)-9+deb12u11
NGINX_DIR := $(TOOLS)/nginx
NGINX_STAMP := $(NGINX_DIR)/.deb-$(NGINX_DEB_VERSION)

$(NGINX_STAMP):
	rm -rf $(NGINX_DIR) $(TOOLS)/nginx-deb
	mkdir -p $(TOOLS)/nginx-deb
	cd $(TOOLS)/nginx-deb && apt-get download -q nginx=$(NGINX_DEB_VERSION)
	test "$$(dpkg-deb -f $(TOOLS)/nginx-deb/nginx_*.deb Version)" = "$(NGINX_DEB_VERSION)"
	dpkg -x $(TOOLS)/nginx-deb/nginx_*.deb $(NGINX_DIR)
	rm -rf $(TOOLS)/nginx-deb
	$(NGINX_DIR)/usr/sbin/nginx -v 2>&1 | grep -qx 'nginx version: nginx/$(NGINX_VERSION)'
	touch $@

.PHONY: bench-tools
bench-tools: $(NGINX_STAMP) ## Unpack the pinned nginx that `make bench` compares the gateway with into .tools/nginx

# Without nginx (no network, say) the gateway benchmark still runs and its
# results say why the nginx rows are missing.
.PHONY: bench
bench: tools build $(ECHO_GO_BIN) $(PROXY_GO_BIN) ## Measure latency and footprint into bench/*.md and plots into bench/*.png, all in bench/results.md: anchors, calls, checkouts, arrival rates, gateway vs nginx, mTLS, the mesh part by part, the stack
	$(MAKE) bench-tools || echo "make bench: nginx could not be unpacked; bench/gateway.md will say so" >&2
	$(PY) -m bench

.PHONY: clean
clean: down ## Remove generated state (.run) and built services; tools stay
	rm -rf .run .build services/payments/dist
