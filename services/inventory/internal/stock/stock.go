// Package stock is the inventory's domain: stock levels per product and
// reservations per order, kept in a bbolt file.
//
// A reservation moves RESERVED -> COMMITTED (the order was paid) or
// RESERVED -> RELEASED (the checkout saga compensated). Every write is
// idempotent by order id and runs in one bbolt read-write transaction;
// bbolt admits one writer at a time, so concurrent reservations can never
// sell the same unit twice. The package knows nothing of gRPC: it reports
// failures as the Error kinds documented in errors.go.
package stock

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits on requests, as the contract states them.
const (
	MaxProductIDs = 100
	MaxIDLength   = 128
)

// Level is the stock of one product.
type Level struct {
	ProductID string `json:"-"`
	// Available units can still be reserved.
	Available int32 `json:"available"`
	// Reserved units are held by open (RESERVED) reservations.
	Reserved int32 `json:"reserved"`
}

// Line is one product and quantity of an order.
type Line struct {
	ProductID string `json:"product_id"`
	Quantity  int32  `json:"quantity"`
}

// Status is where a reservation is in its life cycle.
type Status int

const (
	Reserved Status = iota + 1
	Committed
	Released
)

var statusNames = map[Status]string{Reserved: "RESERVED", Committed: "COMMITTED", Released: "RELEASED"}

func (s Status) String() string {
	if name, ok := statusNames[s]; ok {
		return name
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// MarshalText stores the status by name, so the file stays readable with
// `bbolt get` and a renumbering can never change a stored state.
func (s Status) MarshalText() ([]byte, error) {
	if _, ok := statusNames[s]; !ok {
		return nil, fmt.Errorf("unknown reservation status %d", int(s))
	}
	return []byte(s.String()), nil
}

func (s *Status) UnmarshalText(text []byte) error {
	for status, name := range statusNames {
		if name == string(text) {
			*s = status
			return nil
		}
	}
	return fmt.Errorf("unknown reservation status %q", text)
}

// Reservation is the stock held for one order.
type Reservation struct {
	OrderID string `json:"-"`
	Lines   []Line `json:"lines"`
	Status  Status `json:"status"`
}

// sameLines reports whether two line lists hold the same products and
// quantities in any order; each list names a product at most once.
func sameLines(a, b []Line) bool {
	if len(a) != len(b) {
		return false
	}
	byProduct := func(x, y Line) int { return strings.Compare(x.ProductID, y.ProductID) }
	return slices.Equal(slices.SortedFunc(slices.Values(a), byProduct),
		slices.SortedFunc(slices.Values(b), byProduct))
}

func invalid(field, problem string) error {
	return &InvalidArgument{Field: field, Problem: problem}
}

// checkID validates a required identifier such as an order or product id.
func checkID(field, id string) error {
	if id == "" {
		return invalid(field, "is required")
	}
	if utf8.RuneCountInString(id) > MaxIDLength {
		return invalid(field, fmt.Sprintf("must be at most %d characters", MaxIDLength))
	}
	return nil
}

func validateProductIDs(ids []string) error {
	if len(ids) == 0 {
		return invalid("product_ids", "must not be empty")
	}
	if len(ids) > MaxProductIDs {
		return invalid("product_ids",
			fmt.Sprintf("must have at most %d entries, got %d", MaxProductIDs, len(ids)))
	}
	for i, id := range ids {
		if err := checkID(fmt.Sprintf("product_ids[%d]", i), id); err != nil {
			return err
		}
	}
	return nil
}

// validateReservation checks fields in request order (order_id, then each
// line's product_id and quantity) and reports the first problem only.
func validateReservation(orderID string, lines []Line) error {
	if err := checkID("order_id", orderID); err != nil {
		return err
	}
	if len(lines) == 0 {
		return invalid("lines", "must not be empty")
	}
	first := make(map[string]int, len(lines))
	for i, line := range lines {
		field := fmt.Sprintf("lines[%d].product_id", i)
		if err := checkID(field, line.ProductID); err != nil {
			return err
		}
		if j, seen := first[line.ProductID]; seen {
			return invalid(field, fmt.Sprintf("repeats lines[%d].product_id %q", j, line.ProductID))
		}
		first[line.ProductID] = i
		if line.Quantity <= 0 {
			return invalid(fmt.Sprintf("lines[%d].quantity", i),
				fmt.Sprintf("must be positive, got %d", line.Quantity))
		}
	}
	return nil
}
