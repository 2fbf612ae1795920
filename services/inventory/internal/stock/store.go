package stock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The file holds two buckets of JSON values, readable with the bbolt tool:
// stock: product id -> {"available": N, "reserved": N}
// reservations: order id -> {"lines": [...], "status": "RESERVED"}
var (
	stockBucket        = []byte("stock")
	reservationsBucket = []byte("reservations")
)

// lockTimeout bounds the wait for bbolt's file lock: a second process on the
// same file fails with a clear error instead of hanging forever.
const lockTimeout = 2 * time.Second

// Store is the inventory kept in one bbolt file. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens the bbolt file at path, creating it when missing, and seeds the
// stock from seed_stock.json when the file has no stock yet.
func Open(path string) (*Store, error) {
	seed, err := SeedLevels()
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("cannot open store %s: locked by another process", path)
	}
	if err != nil {
		// The os error repeats the path; keep only the reason.
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		return nil, fmt.Errorf("cannot open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(reservationsBucket); err != nil {
			return err
		}
		levels, err := tx.CreateBucketIfNotExists(stockBucket)
		if err != nil {
			return err
		}
		if first, _ := levels.Cursor().First(); first != nil {
			return nil
		}
		for _, level := range seed {
			if err := putLevel(levels, level); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("cannot initialise %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close releases the file; calls after it fail.
func (s *Store) Close() error {
	return s.db.Close()
}

func getLevel(b *bolt.Bucket, productID string) (Level, bool, error) {
	raw := b.Get([]byte(productID))
	if raw == nil {
		return Level{}, false, nil
	}
	level := Level{ProductID: productID}
	if err := json.Unmarshal(raw, &level); err != nil {
		return Level{}, false, fmt.Errorf("stock of %q is corrupt: %w", productID, err)
	}
	return level, true, nil
}

func putLevel(b *bolt.Bucket, level Level) error {
	raw, err := json.Marshal(level)
	if err != nil {
		return err
	}
	return b.Put([]byte(level.ProductID), raw)
}

func getReservation(b *bolt.Bucket, orderID string) (Reservation, bool, error) {
	raw := b.Get([]byte(orderID))
	if raw == nil {
		return Reservation{}, false, nil
	}
	r := Reservation{OrderID: orderID}
	if err := json.Unmarshal(raw, &r); err != nil {
		return Reservation{}, false, fmt.Errorf("reservation of %q is corrupt: %w", orderID, err)
	}
	return r, true, nil
}

func putReservation(b *bolt.Bucket, r Reservation) error {
	raw, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put([]byte(r.OrderID), raw)
}
