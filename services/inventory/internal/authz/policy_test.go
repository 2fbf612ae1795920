package authz_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"

	catalogpb "github.com/shopmesh/shopmesh/gen/go/shop/catalog/v1"
	inventorypb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	notificationspb "github.com/shopmesh/shopmesh/gen/go/shop/notifications/v1"
	orderspb "github.com/shopmesh/shopmesh/gen/go/shop/orders/v1"
	paymentspb "github.com/shopmesh/shopmesh/gen/go/shop/payments/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/authz"
)

// The shop's real policy file, from this package's folder.
const shopPolicy = "../../../../mesh/policy.yaml"

const (
	catalog       = "shop.catalog.v1.CatalogService"
	orders        = "shop.orders.v1.OrdersService"
	inventory     = "shop.inventory.v1.InventoryService"
	payments      = "shop.payments.v1.PaymentsService"
	notifications = "shop.notifications.v1.NotificationsService"
	healthService = "grpc.health.v1.Health"
)

// The gRPC services each shop service serves, from the generated code.
var contracts = map[string]grpc.ServiceDesc{
	"catalog":       catalogpb.CatalogService_ServiceDesc,
	"orders":        orderspb.OrdersService_ServiceDesc,
	"inventory":     inventorypb.InventoryService_ServiceDesc,
	"payments":      paymentspb.PaymentsService_ServiceDesc,
	"notifications": notificationspb.NotificationsService_ServiceDesc,
}

func methodsOf(desc grpc.ServiceDesc) []string {
	var names []string
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range desc.Streams {
		names = append(names, s.StreamName)
	}
	return names
}

// allMethods is every method of every shop contract, plus reflection and health.
func allMethods() []string {
	var methods []string
	for _, service := range authz.Services() {
		if desc, ok := contracts[service]; ok {
			for _, name := range methodsOf(desc) {
				methods = append(methods, "/"+desc.ServiceName+"/"+name)
			}
		}
	}
	for _, service := range authz.ReflectionServices() {
		methods = append(methods, "/"+service+"/ServerReflectionInfo")
	}
	return append(methods, "/"+healthService+"/Check", "/"+healthService+"/Watch")
}

func full(service string, names ...string) []string {
	var methods []string
	for _, name := range names {
		methods = append(methods, "/"+service+"/"+name)
	}
	return methods
}

// expected is mesh/tests/test_policy.py's EXPECTED: (target, caller) -> the
// methods allowed, as issue 9 words it.
var expected = map[[2]string][]string{
	{"catalog", "gateway"}:       full(catalog, "ListProducts", "GetProduct", "SearchProducts"),
	{"orders", "gateway"}:        full(orders, "PlaceOrder", "GetOrder", "ListOrders"),
	{"notifications", "gateway"}: full(notifications, "ListNotifications", "StreamNotifications"),
	{"catalog", "orders"}:        full(catalog, "GetProduct"),
	{"inventory", "orders"}:      full(inventory, "ReserveStock", "CommitStock", "ReleaseStock"),
	{"payments", "orders"}:       full(payments, "Charge", "ResolveCharge", "Refund"),
}

func spiffe(name string) string { return "spiffe://shop.local/" + name }

func loadShop(t *testing.T) *authz.Policy {
	t.Helper()
	policy, err := authz.Load(shopPolicy)
	if err != nil {
		t.Fatalf("the shop's policy does not load: %v", err)
	}
	return policy
}

func TestTheShopsPolicyLoads(t *testing.T) {
	policy := loadShop(t)
	if policy.TrustDomain != "shop.local" || policy.Source != shopPolicy {
		t.Errorf("trust domain %q, source %q", policy.TrustDomain, policy.Source)
	}
	callers := map[string][]string{
		"catalog": {"gateway", "orders"}, "orders": {"gateway"}, "notifications": {"gateway"},
		"inventory": {"orders"}, "payments": {"orders"}, "gateway": nil,
	}
	for service, want := range callers {
		if got := policy.CallersOf(service); !slices.Equal(got, want) {
			t.Errorf("CallersOf(%s) = %v, want %v", service, got, want)
		}
	}
	if got := policy.Identity("orders"); got != "spiffe://shop.local/orders" {
		t.Errorf("Identity(orders) = %q", got)
	}
	if got := policy.MethodsFor("catalog", "orders"); !slices.Equal(got, []string{catalog + "/GetProduct"}) {
		t.Errorf("MethodsFor(catalog, orders) = %v", got)
	}
	if got := policy.MethodsFor("inventory", "gateway"); got != nil {
		t.Errorf("MethodsFor(inventory, gateway) = %v", got)
	}
}

func TestDecisions(t *testing.T) {
	policy := loadShop(t)
	cases := []struct {
		service, caller, method string
		allowed                 bool
	}{
		{"catalog", spiffe("gateway"), "/" + catalog + "/ListProducts", true},
		{"catalog", spiffe("gateway"), "/" + catalog + "/SearchProducts", true},
		{"catalog", spiffe("orders"), "/" + catalog + "/GetProduct", true},
		{"catalog", spiffe("orders"), "/" + catalog + "/ListProducts", false},
		{"inventory", spiffe("gateway"), "/" + inventory + "/GetStock", false},
		{"inventory", spiffe("gateway"), "/" + inventory + "/ReserveStock", false},
		{"inventory", spiffe("orders"), "/" + inventory + "/ReserveStock", true},
		{"inventory", spiffe("orders"), "/" + inventory + "/GetStock", false},
		{"payments", spiffe("orders"), "/" + payments + "/Charge", true},
		{"payments", spiffe("catalog"), "/" + payments + "/Charge", false},
		{"payments", spiffe("gateway"), "/" + payments + "/GetPayment", false},
		{"orders", spiffe("gateway"), "/" + orders + "/PlaceOrder", true},
		{"orders", spiffe("notifications"), "/" + orders + "/GetOrder", false},
		{"catalog", spiffe("notifications"), "/" + catalog + "/GetProduct", false},
		{"notifications", spiffe("gateway"), "/" + notifications + "/StreamNotifications", true},
		{"notifications", spiffe("orders"), "/" + notifications + "/ListNotifications", false},
		// A method of another service's contract, even one the caller may
		// call there, is not granted here.
		{"catalog", spiffe("orders"), "/" + inventory + "/ReserveStock", false},
		{"catalog", spiffe("gateway"), "/" + orders + "/PlaceOrder", false},
		// A method the contract does not have is still covered by Service/*;
		// the server answers UNIMPLEMENTED.
		{"catalog", spiffe("gateway"), "/" + catalog + "/DeleteEverything", true},
		{"gateway", spiffe("orders"), "/" + catalog + "/GetProduct", false},
		// Another trust domain is nobody.
		{"inventory", "spiffe://other.domain/orders", "/" + inventory + "/ReserveStock", false},
		// Without an identity: health only.
		{"inventory", "", "/" + inventory + "/ReserveStock", false},
		{"inventory", "", "/" + healthService + "/Check", true},
	}
	for _, c := range cases {
		if got := policy.Allows(c.service, c.caller, c.method); got != c.allowed {
			t.Errorf("Allows(%s, %q, %s) = %v, want %v", c.service, c.caller, c.method, got, c.allowed)
		}
	}
}

func TestTheFullMatrixIsTheIssuesTable(t *testing.T) {
	policy := loadShop(t)
	methods := allMethods()
	if len(methods) <= 15 {
		t.Fatalf("only %d methods: %v", len(methods), methods)
	}
	for _, target := range authz.Services() {
		for _, caller := range authz.Services() {
			for _, method := range methods {
				want := strings.HasPrefix(method, "/"+healthService+"/") ||
					slices.Contains(expected[[2]string{target, caller}], method)
				if got := policy.Allows(target, spiffe(caller), method); got != want {
					t.Errorf("Allows(%s, %s, %s) = %v, want %v", target, caller, method, got, want)
				}
			}
		}
	}
}

func TestNoKnownIdentityGetsOnlyHealth(t *testing.T) {
	policy := loadShop(t)
	identities := []string{
		"",
		"orders",
		"spiffe://other.domain/orders",
		"spiffe://evil.shop.local/orders",
		"spiffe://shop.localhost/orders",
		"spiffe://shop.local/orders/extra",
		"spiffe://shop.local/",
		"spiffe://shop.local/stranger",
		"https://shop.local/orders",
		"SPIFFE://SHOP.LOCAL/orders",
	}
	for _, identity := range identities {
		if name, ok := policy.CallerName(identity); ok {
			t.Errorf("CallerName(%q) = %q", identity, name)
		}
		for _, service := range authz.Services() {
			for _, method := range allMethods() {
				want := strings.HasPrefix(method, "/"+healthService+"/")
				if got := policy.Allows(service, identity, method); got != want {
					t.Errorf("Allows(%s, %q, %s) = %v", service, identity, method, got)
				}
			}
		}
	}
}

func TestReflectionIsDeniedUnlessListed(t *testing.T) {
	policy := loadShop(t)
	v1 := "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	v1alpha := "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
	for _, method := range []string{v1, v1alpha} {
		if policy.Allows("catalog", spiffe("gateway"), method) || policy.Allows("inventory", spiffe("orders"), method) {
			t.Errorf("%s allowed by the shop's policy", method)
		}
	}
	listed := parse(t, head+"services:\n  catalog:\n    - callers: [gateway]\n"+
		"      methods: [\"grpc.reflection.v1alpha.ServerReflection/*\"]\n")
	if !listed.Allows("catalog", spiffe("gateway"), v1alpha) ||
		listed.Allows("catalog", spiffe("gateway"), v1) ||
		listed.Allows("catalog", spiffe("orders"), v1alpha) ||
		listed.Allows("orders", spiffe("gateway"), v1alpha) {
		t.Error("listed reflection: wrong decisions")
	}
}

func TestAMalformedMethodIsDenied(t *testing.T) {
	policy := loadShop(t)
	for _, method := range []string{
		catalog + "/GetProduct", // no leading slash
		"/" + catalog + "/",
		"/" + catalog,
		"/" + catalog + "/*",
		"/" + catalog + "/Get Product",
		"/" + catalog + "/a/GetProduct",
		"//" + catalog + "/GetProduct",
		"",
	} {
		// The gateway may call every catalog method, but none of these is one
		// (`*` is a wildcard in the file only, not on the wire).
		if policy.Allows("catalog", spiffe("gateway"), method) || policy.Allows("catalog", spiffe("orders"), method) {
			t.Errorf("%q allowed", method)
		}
	}
}

func TestAnUnknownTargetIsDeniedAllButHealth(t *testing.T) {
	policy := loadShop(t)
	if policy.Allows("catalogue", spiffe("gateway"), "/"+catalog+"/GetProduct") {
		t.Error("unknown target allowed")
	}
	if !policy.Allows("catalogue", spiffe("gateway"), "/"+healthService+"/Check") {
		t.Error("health closed on an unknown target")
	}
}

func TestEveryListedMethodExistsInTheGeneratedCode(t *testing.T) {
	policy := loadShop(t)
	if len(policy.Rules) == 0 {
		t.Fatal("no rules")
	}
	for _, rule := range policy.Rules {
		for _, pattern := range rule.Methods {
			service, method, _ := strings.Cut(pattern, "/")
			var names []string
			if slices.Contains(authz.ReflectionServices(), service) {
				names = []string{"ServerReflectionInfo"}
			} else {
				desc := contracts[rule.Service]
				if service != desc.ServiceName {
					t.Errorf("line %d: %s is not %s's contract", rule.Line, pattern, rule.Service)
					continue
				}
				names = methodsOf(desc)
			}
			if method != "*" && !slices.Contains(names, method) {
				t.Errorf("line %d: %s is no method of the contract", rule.Line, pattern)
			}
		}
	}
}

func TestAMissingFileIsNamed(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := authz.Load(missing)
	var policyErr *authz.Error
	if !errors.As(err, &policyErr) || policyErr.Line != 0 || policyErr.Key != "(file)" {
		t.Fatalf("error %#v", err)
	}
	if want := missing + ":0: (file): cannot read: No such file or directory"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestAnExactMethodBesideAWildcardIsAllowed(t *testing.T) {
	policy := parse(t, good+"    - callers: [gateway, orders]\n"+
		"      methods: [\"shop.catalog.v1.CatalogService/GetProduct\"]\n")
	if !policy.Allows("catalog", spiffe("orders"), "/"+catalog+"/GetProduct") ||
		policy.Allows("catalog", spiffe("orders"), "/"+catalog+"/ListProducts") {
		t.Error("wrong decisions")
	}
}

func TestTheGoodBaseOfTheMalformedCasesLoads(t *testing.T) {
	if got := parse(t, good).CallersOf("catalog"); !slices.Equal(got, []string{"gateway"}) {
		t.Errorf("CallersOf(catalog) = %v", got)
	}
}

func TestScalarsAreTypedAsPyYAMLTypesThem(t *testing.T) {
	// yaml.v3 reads 1e3 as a number; PyYAML (YAML 1.1) as a string.
	if policy := parse(t, strings.Replace(good, "shop.local", "1e3", 1)); policy.TrustDomain != "1e3" {
		t.Errorf("trust domain %q", policy.TrustDomain)
	}
}

func TestAliasesAreFollowed(t *testing.T) {
	policy := parse(t, head+"services:\n"+
		"  catalog:\n    - callers: &both [gateway, orders]\n"+
		"      methods: [\"shop.catalog.v1.CatalogService/GetProduct\"]\n"+
		"  orders:\n    - callers: *both\n      methods: [\"shop.orders.v1.OrdersService/*\"]\n")
	if !policy.Allows("orders", spiffe("orders"), "/"+orders+"/GetOrder") {
		t.Error("alias not followed")
	}
}

func parse(t *testing.T, document string) *authz.Policy {
	t.Helper()
	policy, err := authz.Parse([]byte(document), "<test>")
	if err != nil {
		t.Fatalf("does not parse: %v", err)
	}
	return policy
}

const (
	head = "version: 1\ntrust_domain: shop.local\n"
	rule = "  catalog:\n    - callers: [gateway]\n      methods: [\"shop.catalog.v1.CatalogService/*\"]\n"
	good = head + "services:\n" + rule
)

// malformed is mesh/tests/test_policy.py's MALFORMED, and a few more cases
// where yaml.v3 and PyYAML differ: (document, line, key, a fragment of the problem).
var malformed = []struct {
	name, document string
	line           int
	key, problem   string
}{
	// PyYAML names line 3 (where it found the end), yaml.v3 the line the
	// unclosed flow sequence starts on.
	{"not yaml", "version: 1\nservices: [\n", 2, "(document)", "not valid YAML"},
	{"empty", "", 1, "(document)", "empty"},
	{"only a comment", "# nothing\n", 1, "(document)", "empty"},
	{"a list", "- 1\n", 1, "(document)", "must be a mapping, got a list"},
	{"unknown top key", good + "owner: me\n", 7, "owner", "unknown key"},
	{"missing services", head, 1, "(document)", "missing key(s) services"},
	{"duplicate top key", good + "version: 1\n", 7, "version", "duplicate key"},
	{"version as text", strings.Replace(good, "version: 1", `version: "1"`, 1), 1, "version", "a string"},
	{"version 2", strings.Replace(good, "version: 1", "version: 2", 1), 1, "version", "unsupported version"},
	{"trust domain with scheme", strings.Replace(good, "shop.local", "spiffe://shop.local", 1),
		2, "trust_domain", "not a SPIFFE trust domain"},
	{"trust domain upper case", strings.Replace(good, "shop.local", "Shop.Local", 1),
		2, "trust_domain", "not a SPIFFE trust domain"},
	{"trust domain empty label", strings.Replace(good, "shop.local", "shop..local", 1),
		2, "trust_domain", "not a SPIFFE trust domain"},
	{"services empty", head + "services: {}\n", 3, "services", "must not be empty"},
	{"services a list", head + "services: [catalog]\n", 3, "services", "must be a mapping"},
	{"unknown service", head + "services:\n" + strings.Replace(rule, "  catalog:", "  catalogue:", 1),
		4, "services.catalogue", "unknown service 'catalogue'"},
	{"service with no rules", head + "services:\n  catalog: []\n", 4, "services.catalog", "must not be an empty list"},
	{"rule not a mapping", head + "services:\n  catalog:\n    - gateway\n",
		5, "services.catalog[0]", "must be a mapping, got a string"},
	{"unknown rule key", good + "      method: [x]\n",
		7, "services.catalog[0].method", "unknown key; expected callers, methods"},
	{"rule without methods", head + "services:\n  catalog:\n    - callers: [gateway]\n",
		5, "services.catalog[0]", "missing key(s) methods"},
	{"callers a string", strings.Replace(good, "[gateway]", "gateway", 1),
		5, "services.catalog[0].callers", "must be a list, got a string"},
	{"callers empty", strings.Replace(good, "[gateway]", "[]", 1),
		5, "services.catalog[0].callers", "must not be an empty list"},
	{"unknown caller", strings.Replace(good, "[gateway]", "[gateway, gatway]", 1),
		5, "services.catalog[0].callers[1]", "unknown caller 'gatway'"},
	{"caller a number", strings.Replace(good, "[gateway]", "[7]", 1),
		5, "services.catalog[0].callers[0]", "must be a non-empty string, got an integer"},
	{"caller twice", strings.Replace(good, "[gateway]", "[gateway, gateway]", 1),
		5, "services.catalog[0].callers[1]", "gateway is listed twice"},
	{"caller as identity", strings.Replace(good, "[gateway]", `["spiffe://shop.local/gateway"]`, 1),
		5, "services.catalog[0].callers[0]", "unknown caller"},
	{"methods empty", strings.Replace(good, `["shop.catalog.v1.CatalogService/*"]`, "[]", 1),
		6, "services.catalog[0].methods", "must not be an empty list"},
	{"bare star", strings.Replace(good, "shop.catalog.v1.CatalogService/*", "*", 1),
		6, "services.catalog[0].methods[0]", "not package.Service/Method"},
	{"no method", strings.Replace(good, "CatalogService/*", "CatalogService", 1),
		6, "services.catalog[0].methods[0]", "not package.Service/Method"},
	{"leading slash", strings.Replace(good, `"shop.`, `"/shop.`, 1),
		6, "services.catalog[0].methods[0]", "not package.Service/Method"},
	{"no package", strings.Replace(good, "shop.catalog.v1.CatalogService/*", "CatalogService/*", 1),
		6, "services.catalog[0].methods[0]", "not package.Service/Method"},
	{"partial wildcard", strings.Replace(good, "CatalogService/*", "CatalogService/Get*", 1),
		6, "services.catalog[0].methods[0]", "not package.Service/Method"},
	{"another service's method",
		strings.Replace(good, "shop.catalog.v1.CatalogService/*", "shop.inventory.v1.InventoryService/*", 1),
		6, "services.catalog[0].methods[0]", "catalog does not serve shop.inventory.v1.InventoryService"},
	{"health listed", strings.Replace(good, "shop.catalog.v1.CatalogService/*", "grpc.health.v1.Health/*", 1),
		6, "services.catalog[0].methods[0]", "health is open to every caller"},
	{"method twice", strings.Replace(good, `["shop.catalog.v1.CatalogService/*"]`,
		`["shop.catalog.v1.CatalogService/*", "shop.catalog.v1.CatalogService/*"]`, 1),
		6, "services.catalog[0].methods[1]", "listed twice"},
	{"duplicate rule", good + strings.Replace(rule, "  catalog:\n", "", 1),
		8, "services.catalog[1].methods", "gateway is already granted shop.catalog.v1.CatalogService/* at line 6"},
	{"duplicate service key", good + rule, 7, "services.catalog", "duplicate key"},
	{"merge key", good + "      <<: {callers: [orders]}\n", 7, "services.catalog[0].<<", "merge keys are not allowed"},
	// Where yaml.v3 alone would differ from PyYAML.
	{"two documents", good + "---\n" + good, 7, "(document)", "but found another document"},
	{"an empty document", "---\n", 2, "(document)", "must be a mapping, got null"},
	{"trust domain a YAML 1.1 boolean", strings.Replace(good, "shop.local", "yes", 1),
		2, "trust_domain", "must be a non-empty string, got a boolean"},
	{"caller a YAML 1.1 boolean", strings.Replace(good, "[gateway]", "[gateway, off]", 1),
		5, "services.catalog[0].callers[1]", "must be a non-empty string, got a boolean"},
	{"version a sexagesimal", strings.Replace(good, "version: 1", "version: 1:00", 1),
		1, "version", "unsupported version 1:00"},
	{"key an integer", good + "1: x\n", 7, "(document) (a key)", "must be a non-empty string, got an integer"},
	{"caller null", strings.Replace(good, "[gateway]", "[~]", 1),
		5, "services.catalog[0].callers[0]", "must be a non-empty string, got null"},
	{"caller blank", strings.Replace(good, "[gateway]", `[" "]`, 1),
		5, "services.catalog[0].callers[0]", "must be a non-empty string, got an empty string"},
	{"caller a timestamp", strings.Replace(good, "[gateway]", "[2026-11-26]", 1),
		5, "services.catalog[0].callers[0]", "got a tag:yaml.org,2002:timestamp value"},
	{"custom tag", strings.Replace(good, "[gateway]", "[!svc gateway]", 1),
		5, "services.catalog[0].callers[0]", "got a !svc value"},
}

func TestAMalformedPolicyIsRefusedNamingFileLineAndKey(t *testing.T) {
	dir := t.TempDir()
	for _, c := range malformed {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml")
			if err := os.WriteFile(path, []byte(c.document), 0o600); err != nil {
				t.Fatal(err)
			}
			policy, err := authz.Load(path)
			var policyErr *authz.Error
			if !errors.As(err, &policyErr) {
				t.Fatalf("loaded (%v), error %v", policy, err)
			}
			if policyErr.Line != c.line || policyErr.Key != c.key || !strings.Contains(policyErr.Problem, c.problem) {
				t.Errorf("got %q, want line %d, key %s, problem with %q", err, c.line, c.key, c.problem)
			}
			if prefix := path + ":" + strconv.Itoa(c.line) + ": " + c.key + ": "; !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("%q does not start with %q", err, prefix)
			}
		})
	}
}
