package faults

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

const source = "faults.yaml"

func TestParseGoodFiles(t *testing.T) {
	cases := map[string]struct {
		document string
		want     map[string]Rule // by method looked up
		n        int
	}{
		"empty file":    {"", nil, 0},
		"null document": {"~\n", nil, 0},
		"empty mapping": {"{}\n", nil, 0},
		"version only":  {"version: 1\n", nil, 0},
		"null faults":   {"version: 1\nfaults:\n", nil, 0},
		"empty faults":  {"faults: {}\n", nil, 0},
		"null service":  {"faults:\n  inventory:\n", nil, 0},
		"other services only": {`
faults:
  payments:
    "*": {delay_ms: 300}
    Charge: {whatever: [1, 2]}   # theirs to judge
  gateway:
`, map[string]Rule{"GetStock": {}}, 0},
		"the spec's example": {`
version: 1
faults:
  payments:
    "*": {delay_ms: 300}
  inventory:
    ReserveStock: {error_ratio: 0.3, error_code: UNAVAILABLE}
`, map[string]Rule{
			"ReserveStock": {ErrorRatio: 0.3, Code: codes.Unavailable},
			"GetStock":     {},
		}, 1},
		"method over every": {`
faults:
  inventory:
    "*": {delay_ms: 200}
    GetStock: {error_ratio: 1, error_code: RESOURCE_EXHAUSTED}
    CommitStock: {delay_ms: 0, error_ratio: 0}
`, map[string]Rule{
			"GetStock":     {ErrorRatio: 1, Code: codes.ResourceExhausted},
			"ReserveStock": {Delay: 200 * time.Millisecond, Code: codes.Unavailable},
			"CommitStock":  {Code: codes.Unavailable},
		}, 3},
		"integer ratio, default code": {"faults: {inventory: {GetStock: {error_ratio: 0}}}\n",
			map[string]Rule{"GetStock": {Code: codes.Unavailable}}, 1},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rules, err := Parse([]byte(c.document), source, "inventory")
			if err != nil {
				t.Fatal(err)
			}
			if rules.Len() != c.n {
				t.Errorf("%d rules, want %d", rules.Len(), c.n)
			}
			for method, want := range c.want {
				got, ok := rules.Lookup(method)
				if ok != (want != Rule{}) || got != want {
					t.Errorf("%s: got %+v %v, want %+v", method, got, ok, want)
				}
			}
		})
	}
}

func TestParseRefusesSchemaErrors(t *testing.T) {
	cases := map[string]struct{ document, want string }{
		"not YAML":       {"faults: [\n", "faults.yaml:1: (document): not valid YAML: "},
		"two documents":  {"faults: {}\n---\nfaults: {}\n", "faults.yaml:2: (document): not valid YAML: but found another document"},
		"a list":         {"- 1\n", "faults.yaml:1: (document): must be a mapping, got a list"},
		"unknown top":    {"fault: {}\n", `faults.yaml:1: (document): unknown key "fault"; expected version, faults`},
		"version 2":      {"version: 2\n", "faults.yaml:1: version: must be 1, got 2 (int)"},
		"version string": {"version: \"1\"\n", `faults.yaml:1: version: must be 1, got "1"`},
		"faults a list":  {"faults: [inventory]\n", "faults.yaml:1: faults: must be a mapping, got a list"},
		"service a list": {"faults:\n  inventory: [GetStock]\n", "faults.yaml:2: faults.inventory: must be a mapping, got a list"},
		"duplicate method": {"faults:\n  inventory:\n    GetStock: {delay_ms: 1}\n    GetStock: {delay_ms: 2}\n",
			`faults.yaml:4: faults.inventory: duplicate key "GetStock"`},
		"bad method": {"faults:\n  inventory:\n    /shop.inventory.v1.InventoryService/GetStock: {delay_ms: 1}\n",
			`faults.yaml:3: faults.inventory: "/shop.inventory.v1.InventoryService/GetStock" is not a method's short name (as ReserveStock) nor "*"`},
		"integer method": {"faults:\n  inventory:\n    1: {delay_ms: 1}\n",
			"faults.yaml:3: faults.inventory: keys must be non-empty strings, got 1 (int)"},
		"rule a number": {"faults:\n  inventory:\n    GetStock: 3\n",
			"faults.yaml:3: faults.inventory.GetStock: must be a mapping, got 3 (int)"},
		"empty rule": {"faults:\n  inventory:\n    GetStock: {}\n",
			"faults.yaml:3: faults.inventory.GetStock: must set at least one of delay_ms, error_ratio, error_code"},
		"null rule": {"faults:\n  inventory:\n    GetStock:\n",
			"faults.yaml:3: faults.inventory.GetStock: must set at least one of delay_ms, error_ratio, error_code"},
		"unknown rule key": {"faults:\n  inventory:\n    GetStock: {delay: 1}\n",
			`faults.yaml:3: faults.inventory.GetStock: unknown key "delay"; expected delay_ms, error_ratio, error_code`},
		"negative delay": {"faults:\n  inventory:\n    GetStock: {delay_ms: -1}\n",
			"faults.yaml:3: faults.inventory.GetStock.delay_ms: must be 0 to 86400000, got -1"},
		"huge delay": {"faults:\n  inventory:\n    GetStock: {delay_ms: 86400001}\n",
			"faults.yaml:3: faults.inventory.GetStock.delay_ms: must be 0 to 86400000, got 86400001"},
		"fractional delay": {"faults:\n  inventory:\n    GetStock: {delay_ms: 1.5}\n",
			"faults.yaml:3: faults.inventory.GetStock.delay_ms: must be an integer, got 1.5 (float)"},
		"string delay": {"faults:\n  inventory:\n    GetStock: {delay_ms: \"300\"}\n",
			`faults.yaml:3: faults.inventory.GetStock.delay_ms: must be an integer, got "300"`},
		"bool delay": {"faults:\n  inventory:\n    GetStock: {delay_ms: true}\n",
			"faults.yaml:3: faults.inventory.GetStock.delay_ms: must be an integer, got true (bool)"},
		"ratio over 1": {"faults:\n  inventory:\n    GetStock: {error_ratio: 1.5}\n",
			"faults.yaml:3: faults.inventory.GetStock.error_ratio: must be 0 to 1, got 1.5"},
		"negative ratio": {"faults:\n  inventory:\n    GetStock: {error_ratio: -0.1}\n",
			"faults.yaml:3: faults.inventory.GetStock.error_ratio: must be 0 to 1, got -0.1"},
		"NaN ratio": {"faults:\n  inventory:\n    GetStock: {error_ratio: .nan}\n",
			"faults.yaml:3: faults.inventory.GetStock.error_ratio: must be 0 to 1, got .nan"},
		"percent ratio": {"faults:\n  inventory:\n    GetStock: {error_ratio: 30%}\n",
			`faults.yaml:3: faults.inventory.GetStock.error_ratio: must be a number, got "30%"`},
		"unknown code": {"faults:\n  inventory:\n    GetStock: {error_code: BUSY}\n",
			`faults.yaml:3: faults.inventory.GetStock.error_code: must be a gRPC status code name such as UNAVAILABLE, got "BUSY"`},
		"lower-case code": {"faults:\n  inventory:\n    GetStock: {error_code: unavailable}\n",
			`faults.yaml:3: faults.inventory.GetStock.error_code: must be a gRPC status code name such as UNAVAILABLE, got "unavailable"`},
		"numeric code": {"faults:\n  inventory:\n    GetStock: {error_code: 14}\n",
			`faults.yaml:3: faults.inventory.GetStock.error_code: must be a gRPC status code name such as UNAVAILABLE, got 14 (int)`},
		"OK code": {"faults:\n  inventory:\n    GetStock: {error_code: OK}\n",
			"faults.yaml:3: faults.inventory.GetStock.error_code: must be an error code, not OK"},
		"other service's shape": {"faults:\n  payments:\n    Charge: 300\n",
			"faults.yaml:3: faults.payments.Charge: must be a mapping, got 300 (int)"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rules, err := Parse([]byte(c.document), source, "inventory")
			var fileErr *Error
			if !errors.As(err, &fileErr) {
				t.Fatalf("got %v, %v; want an *Error", rules, err)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("got  %q\nwant %q", err.Error(), c.want)
			}
		})
	}
}

func TestOnlyTheServicesOwnRulesCount(t *testing.T) {
	document := []byte("faults:\n  payments:\n    \"*\": {delay_ms: 300}\n  inventory:\n    GetStock: {error_ratio: 1}\n")
	payments, err := Parse(document, source, "payments")
	if err != nil {
		t.Fatal(err)
	}
	if rule, ok := payments.Lookup("Charge"); !ok || rule.Delay != 300*time.Millisecond {
		t.Errorf("payments: %+v %v", rule, ok)
	}
	// payments does not judge inventory's rules beyond their shape.
	if _, err := Parse([]byte("faults:\n  inventory:\n    GetStock: {error_ratio: 7}\n"), source, "payments"); err != nil {
		t.Errorf("payments refused inventory's rule: %v", err)
	}
}
