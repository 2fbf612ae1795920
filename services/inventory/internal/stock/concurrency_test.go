package stock

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// 50 orders race for the 10 cast-iron teapots, one each.
func TestConcurrentReservationsNeverOversell(t *testing.T) {
	s, _ := openTemp(t)
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.Reserve(fmt.Sprintf("order-%d", i), []Line{{"prod-teapot-cast-iron", 1}})
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		var short *FailedPrecondition
		switch {
		case err == nil:
			ok++
		case !errors.As(err, &short):
			t.Errorf("unexpected error %v", err)
		}
	}
	if ok != 10 {
		t.Errorf("%d reservations succeeded, want 10", ok)
	}
	wantLevel(t, s, "prod-teapot-cast-iron", 0, 10)
}

// 20 retries of one order at once reserve once.
func TestConcurrentRetriesReserveOnce(t *testing.T) {
	s, _ := openTemp(t)
	before := level(t, s, "prod-chemex").Available
	var wg sync.WaitGroup
	results := make([]Reservation, 20)
	errs := make([]error, 20)
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = s.Reserve("order-retry", []Line{{"prod-chemex", 3}})
		})
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || results[i].Status != Reserved || results[i].Lines[0].Quantity != 3 {
			t.Fatalf("call %d: %+v %v", i, results[i], errs[i])
		}
	}
	wantLevel(t, s, "prod-chemex", before-3, 3)
}
