"""A real single-node Kubernetes cluster on this machine: containerd, etcd,
the API server, controller manager and scheduler, the kubelet, kube-proxy and
CoreDNS, each a process of this run (tests/kubernetes/cluster/processes.py),
every file under the run's state folder, every machine-wide change undone by
`down` (tests/kubernetes/cluster/host.py).

    python -m tests.kubernetes.cluster down    removes what a killed run left
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from localmode.processes import free_port
from tests.kubernetes.cluster import configs, host, pki
from tests.kubernetes.cluster.layout import NODE_NAME, POD_GATEWAY, SERVICE_SUBNET, Layout
from tests.kubernetes.cluster.processes import Processes

# Stopped in this order: what runs pods first, the API server's store last.
STOP_ORDER = (
    "coredns",
    "kube-proxy",
    "kubelet",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
    "containerd",
)
CTR_NAMESPACE = "k8s.io"  # containerd's namespace for what the CRI runs
START_TIMEOUT_S = 120


class Node:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.processes = Processes(layout.state)
        self.timings: list[tuple[str, float]] = []
        self.ports: configs.Ports  # set by up()
        self.token = ""

    # --- up -------------------------------------------------------------------

    def up(self) -> None:
        layout = self.layout
        for folder in (layout.state, layout.containerd_root, layout.cni_conf_dir, layout.volumes):
            folder.mkdir(parents=True, exist_ok=True)
        host.prepare(layout.state)
        ports = configs.Ports(*(free_port() for _ in configs.Ports.__dataclass_fields__))
        self.ports = ports
        self.token = pki.make(layout.pki)
        layout.kubeconfig.write_text(configs.kubeconfig(layout, ports, self.token))
        layout.kubeconfig.chmod(0o600)
        files = {
            "containerd.toml": configs.containerd(layout),
            "kubelet.yaml": configs.kubelet(layout, ports),
            "kube-proxy.yaml": configs.kube_proxy(layout, ports),
            "Corefile": configs.corefile(layout, ports),
        }
        for name, text in files.items():
            (layout.state / name).write_text(text)
        (layout.cni_conf_dir / "10-shopmesh.conflist").write_text(configs.cni(layout))

        self._start_containerd()
        self._import_images()
        self._start_control_plane(ports)
        self._start_node(ports)

    def _timed(self, what: str, started: float) -> None:
        self.timings.append((what, time.monotonic() - started))

    def _start_containerd(self) -> None:
        started = time.monotonic()
        self.processes.start(
            "containerd",
            ["containerd", "--config", str(self.layout.state / "containerd.toml")],
        )
        self.processes.wait_until(
            "containerd", lambda: self.ctr("version", check=False).returncode == 0, 60
        )
        self._timed("containerd", started)

    def _import_images(self) -> None:
        started = time.monotonic()
        archive = self.layout.images / "shop.tar"
        if not archive.exists():
            raise FileNotFoundError(f"{archive}: run scripts/kubernetes/images.sh")
        self.ctr("images", "import", str(archive), timeout_s=600)
        self._timed("image import", started)

    def _start_control_plane(self, ports: configs.Ports) -> None:
        layout, bin_ = self.layout, self.layout.program
        started = time.monotonic()
        etcd_client = f"http://127.0.0.1:{ports.etcd_client}"
        etcd_peer = f"http://127.0.0.1:{ports.etcd_peer}"
        self.processes.start(
            "etcd",
            [
                bin_("etcd"),
                "--name=shopmesh",
                f"--data-dir={layout.state / 'etcd'}",
                f"--listen-client-urls={etcd_client}",
                f"--advertise-client-urls={etcd_client}",
                f"--listen-peer-urls={etcd_peer}",
                f"--initial-advertise-peer-urls={etcd_peer}",
                f"--initial-cluster=shopmesh={etcd_peer}",
                # A test's cluster: losing it in a power cut loses nothing.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self.processes.wait_until("etcd", lambda: _http_ok(f"{etcd_client}/health"), 60)
        pki_dir = layout.pki
        self.processes.start(
            "kube-apiserver",
            [
                bin_("kube-apiserver"),
                f"--etcd-servers={etcd_client}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.apiserver}",
                # The `kubernetes` Service's endpoint must not be a loopback
                # address; nothing in the shop calls the API server.
                f"--advertise-address={POD_GATEWAY}",
                f"--service-cluster-ip-range={SERVICE_SUBNET}",
                # The node's name resolves nowhere: reach the kubelet by its IP.
                "--kubelet-preferred-address-types=InternalIP",
                f"--tls-cert-file={pki_dir / 'apiserver.pem'}",
                f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
                f"--token-auth-file={pki_dir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki_dir / 'sa.pem'}",
                f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
                "--allow-privileged=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        self.processes.wait_until("kube-apiserver", self._api_ready, START_TIMEOUT_S)
        kubeconfig = f"--kubeconfig={layout.kubeconfig}"
        self.processes.start(
            "kube-controller-manager",
            [
                bin_("kube-controller-manager"),
                kubeconfig,
                "--leader-elect=false",
                "--secure-port=0",
                f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                f"--root-ca-file={pki_dir / 'ca.pem'}",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
        )
        self.processes.start(
            "kube-scheduler",
            [bin_("kube-scheduler"), kubeconfig, "--leader-elect=false", "--v=1"],
        )
        self._timed("etcd and control plane", started)

    def _start_node(self, ports: configs.Ports) -> None:
        layout, bin_ = self.layout, self.layout.program
        started = time.monotonic()
        self.processes.start(
            "kubelet",
            [
                bin_("kubelet"),
                f"--config={layout.state / 'kubelet.yaml'}",
                f"--kubeconfig={layout.kubeconfig}",
                f"--root-dir={layout.kubelet_root}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={POD_GATEWAY}",
                "--v=1",
            ],
        )
        self.processes.wait_until("kubelet", self._node_ready, START_TIMEOUT_S, every_s=1)
        self._timed("kubelet (node Ready)", started)
        started = time.monotonic()
        self.processes.start(
            "kube-proxy",
            [bin_("kube-proxy"), f"--config={layout.state / 'kube-proxy.yaml'}", "--v=1"],
        )
        self.processes.wait_until(
            "kube-proxy", lambda: _http_ok(f"http://127.0.0.1:{ports.proxy_healthz}/healthz"), 60
        )
        self.processes.start("coredns", [bin_("coredns"), "-conf", str(layout.state / "Corefile")])
        self.processes.wait_until(
            "coredns", lambda: _http_ok(f"http://127.0.0.1:{ports.coredns_ready}/ready"), 60
        )
        self._timed("kube-proxy and CoreDNS", started)

    def _api_ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.layout.pki / "ca.pem"))
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.ports.apiserver}/readyz",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _node_ready(self) -> bool:
        out = self.kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return out.stdout.strip() == "True"

    # --- tools ----------------------------------------------------------------

    def ctr(
        self, *args: str, check: bool = True, timeout_s: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", str(self.layout.containerd_socket), "-n", CTR_NAMESPACE]
        return subprocess.run(
            [*argv, *args], capture_output=True, text=True, check=check, timeout=timeout_s
        )

    def kubectl(
        self, *args: str, check: bool = True, timeout_s: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.layout.program("kubectl"), f"--kubeconfig={self.layout.kubeconfig}", *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, input=stdin
        )
        if check and result.returncode:
            raise subprocess.CalledProcessError(
                result.returncode, argv, result.stdout, result.stderr
            )
        return result

    # --- down -----------------------------------------------------------------

    def down(self) -> list[str]:
        """Stops everything and undoes every change; returns what could not be."""
        problems: list[str] = []
        if "kube-apiserver" in self.processes.alive() and "kubelet" in self.processes.alive():
            # Pods go the way they would on any node (CNI DEL, unmounts),
            # with a short grace: the shop's drain is tested elsewhere.
            self.kubectl(
                "delete",
                "namespace",
                "shopmesh",
                "--ignore-not-found",
                "--wait=false",
                check=False,
            )
            self.kubectl(
                "-n",
                "shopmesh",
                "delete",
                "pods",
                "--all",
                "--grace-period=1",
                "--timeout=60s",
                check=False,
                timeout_s=90,
            )
        for name in STOP_ORDER:
            if name == "containerd" and name in self.processes.alive():
                self._remove_containers(problems)
            self.processes.stop(name)
        self._kill_leftovers(problems)
        proxy = self.layout.program("kube-proxy")
        if Path(proxy).exists():
            subprocess.run([proxy, "--cleanup"], capture_output=True, timeout=60, check=False)
        host.undo(self.layout.state, problems)
        return problems

    def _remove_containers(self, problems: list[str]) -> None:
        tasks = self.ctr("tasks", "ls", "--quiet", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        for task in tasks:
            for _ in range(50):
                if self.ctr("tasks", "delete", task, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        for container in self.ctr("containers", "ls", "--quiet", check=False).stdout.split():
            result = self.ctr("containers", "delete", container, check=False)
            if result.returncode:
                problems.append(f"container {container}: {result.stderr.strip()}")

    def _kill_leftovers(self, problems: list[str]) -> None:
        """Shims of our containerd and processes in our cgroups, should any
        outlive containerd (a killed run): found by what marks them as ours."""
        socket = str(self.layout.containerd_socket)
        pids: set[int] = set()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
                pids.add(int(proc.name))
        for folder in host.cgroup_folders():
            for procs in folder.rglob("cgroup.procs"):
                pids |= {int(p) for p in procs.read_text().split()}
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            except OSError as error:
                problems.append(f"kill {pid}: {error}")
        if pids:
            time.sleep(1)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def clear_leftovers(layout: Layout) -> list[str]:
    """What a killed run left (its processes, its changes to the machine, its
    folder), from the records in its state folder; what could not be undone."""
    if not layout.state.exists():
        return []
    problems = Node(layout).down()
    remove_state(layout, keep_logs_in=None)
    return problems


def remove_state(layout: Layout, keep_logs_in: Path | None) -> None:
    """The run's folder, once `down` ran; its logs copied out first."""
    if keep_logs_in is not None and (layout.state / "logs").is_dir():
        shutil.rmtree(keep_logs_in, ignore_errors=True)
        shutil.copytree(layout.state / "logs", keep_logs_in)
    leftover_mounts = host.mounts_under(layout.state)
    if leftover_mounts:
        raise RuntimeError(f"still mounted, not removing {layout.state}: {leftover_mounts}")
    shutil.rmtree(layout.state, ignore_errors=True)
