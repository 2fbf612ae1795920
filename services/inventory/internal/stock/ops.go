package stock

import (
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// GetStock returns one Level per id, in request order; an id may repeat.
func (s *Store) GetStock(productIDs []string) ([]Level, error) {
	if err := validateProductIDs(productIDs); err != nil {
		return nil, err
	}
	levels := make([]Level, 0, len(productIDs))
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(stockBucket)
		for _, id := range productIDs {
			level, found, err := getLevel(b, id)
			if err != nil {
				return err
			}
			if !found {
				return &NotFound{Kind: "product", ID: id}
			}
			levels = append(levels, level)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return levels, nil
}

// Reserve holds every line for the order, or nothing. Repeating it with the
// same lines (in any order) returns the existing reservation whatever its
// status; other lines for the same order are an *AlreadyExists.
func (s *Store) Reserve(orderID string, lines []Line) (Reservation, error) {
	if err := validateReservation(orderID, lines); err != nil {
		return Reservation{}, err
	}
	var result Reservation
	// One read-write transaction: the existence check, the stock checks and
	// the writes see no other writer, and any error rolls all of them back.
	err := s.db.Update(func(tx *bolt.Tx) error {
		reservations := tx.Bucket(reservationsBucket)
		existing, found, err := getReservation(reservations, orderID)
		if err != nil {
			return err
		}
		if found {
			if !sameLines(existing.Lines, lines) {
				return &AlreadyExists{OrderID: orderID}
			}
			result = existing
			return nil
		}
		stock := tx.Bucket(stockBucket)
		// Unknown products first: a wrong id is the caller's bug and should
		// not hide behind a shortage that may pass by itself.
		levels := make([]Level, len(lines))
		for i, line := range lines {
			level, found, err := getLevel(stock, line.ProductID)
			if err != nil {
				return err
			}
			if !found {
				return &NotFound{Kind: "product", ID: line.ProductID}
			}
			levels[i] = level
		}
		for i, line := range lines {
			if levels[i].Available < line.Quantity {
				return insufficientStock(line.ProductID, levels[i].Available, line.Quantity)
			}
			levels[i].Available -= line.Quantity
			levels[i].Reserved += line.Quantity
			if err := putLevel(stock, levels[i]); err != nil {
				return err
			}
		}
		result = Reservation{OrderID: orderID, Lines: slices.Clone(lines), Status: Reserved}
		return putReservation(reservations, result)
	})
	if err != nil {
		return Reservation{}, err
	}
	return result, nil
}

// Commit marks the order's reservation paid: its units leave stock for good.
// Committing twice returns the committed reservation unchanged.
func (s *Store) Commit(orderID string) (Reservation, error) {
	if err := checkID("order_id", orderID); err != nil {
		return Reservation{}, err
	}
	var result Reservation
	err := s.db.Update(func(tx *bolt.Tx) error {
		r, found, err := getReservation(tx.Bucket(reservationsBucket), orderID)
		switch {
		case err != nil:
			return err
		case !found:
			return &NotFound{Kind: "reservation", ID: orderID}
		case r.Status == Committed:
			result = r
			return nil
		case r.Status == Released:
			return &FailedPrecondition{Reason: fmt.Sprintf(
				"the reservation of order %q was released and cannot be committed", orderID)}
		}
		// Available units were already taken off at reservation time.
		result, err = settle(tx, r, Committed, false)
		return err
	})
	if err != nil {
		return Reservation{}, err
	}
	return result, nil
}

// Release returns the order's units to stock: the saga's compensation.
// Releasing twice returns the released reservation unchanged; an order with
// no reservation gives found == false and records nothing, so compensation
// may run even when the reservation itself never happened.
func (s *Store) Release(orderID string) (r Reservation, found bool, err error) {
	if err := checkID("order_id", orderID); err != nil {
		return Reservation{}, false, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		existing, ok, err := getReservation(tx.Bucket(reservationsBucket), orderID)
		switch {
		case err != nil || !ok:
			return err
		case existing.Status == Released:
			r, found = existing, true
			return nil
		case existing.Status == Committed:
			return &FailedPrecondition{Reason: fmt.Sprintf(
				"the reservation of order %q is committed and cannot be released", orderID)}
		}
		r, err = settle(tx, existing, Released, true)
		found = err == nil
		return err
	})
	if err != nil {
		return Reservation{}, false, err
	}
	return r, found, nil
}

// settle ends a RESERVED reservation: its units stop being reserved and,
// when restock is set, become available again.
func settle(tx *bolt.Tx, r Reservation, to Status, restock bool) (Reservation, error) {
	stock := tx.Bucket(stockBucket)
	for _, line := range r.Lines {
		level, found, err := getLevel(stock, line.ProductID)
		if err != nil {
			return Reservation{}, err
		}
		if !found {
			return Reservation{}, fmt.Errorf("stock of %q held by order %q is missing", line.ProductID, r.OrderID)
		}
		level.Reserved -= line.Quantity
		if restock {
			level.Available += line.Quantity
		}
		if err := putLevel(stock, level); err != nil {
			return Reservation{}, err
		}
	}
	r.Status = to
	return r, putReservation(tx.Bucket(reservationsBucket), r)
}
