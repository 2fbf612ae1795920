package stock

import "fmt"

// Error is implemented by every error the domain reports to a caller; the
// gRPC servicer maps each kind to exactly one status code:
//
//	Error                    the interface below, never a value itself
//	├── *InvalidArgument     a request field is malformed      -> INVALID_ARGUMENT
//	├── *NotFound            no such product or reservation    -> NOT_FOUND
//	├── *FailedPrecondition  too little stock, or the
//	│                        reservation is in the wrong state -> FAILED_PRECONDITION
//	└── *AlreadyExists       the order already holds a
//	                         reservation with other lines      -> ALREADY_EXISTS
//
// Any other error (a failing disk, a corrupt record) is not the caller's
// doing and becomes INTERNAL.
type Error interface {
	error
	stockError()
}

// InvalidArgument names the first malformed request field, in request
// order, with the contract's spelling ("lines[1].quantity").
type InvalidArgument struct {
	Field   string
	Problem string
}

func (e *InvalidArgument) Error() string { return e.Field + ": " + e.Problem }

// NotFound is an unknown product, or an order without a reservation.
type NotFound struct {
	Kind string // "product" or "reservation"
	ID   string // product id or order id
}

func (e *NotFound) Error() string {
	if e.Kind == "reservation" {
		return fmt.Sprintf("order %q has no reservation", e.ID)
	}
	return fmt.Sprintf("no %s with id %q", e.Kind, e.ID)
}

// FailedPrecondition is a request that is well formed but cannot be done in
// the current state; nothing was changed.
type FailedPrecondition struct {
	Reason string
}

func (e *FailedPrecondition) Error() string { return e.Reason }

// AlreadyExists is a reservation request whose order already holds a
// reservation with different lines: the idempotency key was reused.
type AlreadyExists struct {
	OrderID string
}

func (e *AlreadyExists) Error() string {
	return fmt.Sprintf("order %q already has a reservation with different lines", e.OrderID)
}

func (*InvalidArgument) stockError()    {}
func (*NotFound) stockError()           {}
func (*FailedPrecondition) stockError() {}
func (*AlreadyExists) stockError()      {}

func insufficientStock(productID string, available, requested int32) error {
	return &FailedPrecondition{Reason: fmt.Sprintf(
		"not enough stock of %q: %d available, %d requested", productID, available, requested)}
}
