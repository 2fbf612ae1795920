package stock

import (
	"errors"
	"strings"
	"testing"
)

func wantInvalid(t *testing.T, err error, field string) {
	t.Helper()
	var invalid *InvalidArgument
	if !errors.As(err, &invalid) {
		t.Fatalf("got %v, want InvalidArgument on %s", err, field)
	}
	if invalid.Field != field {
		t.Fatalf("field %q, want %q (%v)", invalid.Field, field, err)
	}
	if !strings.HasPrefix(err.Error(), field+": ") {
		t.Fatalf("message %q does not start with the field", err)
	}
}

func TestValidateProductIDs(t *testing.T) {
	long := strings.Repeat("x", MaxIDLength+1)
	many := make([]string, MaxProductIDs+1)
	for i := range many {
		many[i] = "prod-chemex"
	}
	cases := map[string]struct {
		ids   []string
		field string
	}{
		"none":           {nil, "product_ids"},
		"too many":       {many, "product_ids"},
		"empty entry":    {[]string{"a", "b", "c", ""}, "product_ids[3]"},
		"too long entry": {[]string{long}, "product_ids[0]"},
		"first problem":  {[]string{"a", "", long}, "product_ids[1]"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { wantInvalid(t, validateProductIDs(c.ids), c.field) })
	}
	if err := validateProductIDs(many[:MaxProductIDs]); err != nil {
		t.Errorf("%d ids: %v", MaxProductIDs, err)
	}
	if err := validateProductIDs([]string{strings.Repeat("é", MaxIDLength)}); err != nil {
		t.Errorf("length counts characters, not bytes: %v", err)
	}
}

func TestValidateReservation(t *testing.T) {
	ok := Line{ProductID: "p", Quantity: 1}
	cases := map[string]struct {
		orderID string
		lines   []Line
		field   string
	}{
		"no order id":       {"", []Line{ok}, "order_id"},
		"order id too long": {strings.Repeat("o", MaxIDLength+1), []Line{ok}, "order_id"},
		"order id first":    {"", nil, "order_id"},
		"no lines":          {"o", nil, "lines"},
		"empty product id":  {"o", []Line{{"", 1}}, "lines[0].product_id"},
		"long product id":   {"o", []Line{ok, {strings.Repeat("p", 129), 1}}, "lines[1].product_id"},
		"repeated product":  {"o", []Line{ok, {"q", 1}, {"p", 2}}, "lines[2].product_id"},
		"zero quantity":     {"o", []Line{ok, {"q", 0}}, "lines[1].quantity"},
		"negative quantity": {"o", []Line{{"q", -4}}, "lines[0].quantity"},
		"request order":     {"o", []Line{{"q", 0}, {"", 1}}, "lines[0].quantity"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { wantInvalid(t, validateReservation(c.orderID, c.lines), c.field) })
	}
	if err := validateReservation("o", []Line{ok, {"q", 5}}); err != nil {
		t.Errorf("valid request: %v", err)
	}
}

func TestSameLinesIgnoresOrder(t *testing.T) {
	a := []Line{{"p", 1}, {"q", 2}}
	if !sameLines(a, []Line{{"q", 2}, {"p", 1}}) {
		t.Error("reordered lines differ")
	}
	for _, b := range [][]Line{{{"p", 1}}, {{"p", 1}, {"q", 3}}, {{"p", 1}, {"r", 2}}} {
		if sameLines(a, b) {
			t.Errorf("%v and %v compare equal", a, b)
		}
	}
}

func TestStatusText(t *testing.T) {
	for _, s := range []Status{Reserved, Committed, Released} {
		text, err := s.MarshalText()
		var back Status
		if err != nil || back.UnmarshalText(text) != nil || back != s {
			t.Errorf("%v does not round-trip: %q %v", s, text, err)
		}
	}
	if _, err := Status(0).MarshalText(); err == nil {
		t.Error("status 0 was stored")
	}
}
