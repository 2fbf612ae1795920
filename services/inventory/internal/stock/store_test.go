package stock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "inventory.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func level(t *testing.T, s *Store, id string) Level {
	t.Helper()
	levels, err := s.GetStock([]string{id})
	if err != nil {
		t.Fatal(err)
	}
	return levels[0]
}

func wantLevel(t *testing.T, s *Store, id string, available, reserved int32) {
	t.Helper()
	if got := level(t, s, id); got.Available != available || got.Reserved != reserved {
		t.Fatalf("%s: got %+v, want available %d reserved %d", id, got, available, reserved)
	}
}

func wantErr[E error](t *testing.T, err error) E {
	t.Helper()
	var target E
	if !errors.As(err, &target) {
		t.Fatalf("got %v (%T), want %T", err, err, target)
	}
	return target
}

func TestOpenSeedsEveryProduct(t *testing.T) {
	s, _ := openTemp(t)
	seed, _ := SeedLevels()
	ids := make([]string, len(seed))
	for i, l := range seed {
		ids[i] = l.ProductID
	}
	levels, err := s.GetStock(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range levels {
		if l != seed[i] {
			t.Errorf("got %+v, want %+v", l, seed[i])
		}
	}
}

func TestGetStockKeepsRequestOrderAndRepeats(t *testing.T) {
	s, _ := openTemp(t)
	levels, err := s.GetStock([]string{"prod-teapot-cast-iron", "prod-espresso-machine", "prod-teapot-cast-iron"})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{levels[0].ProductID, levels[1].ProductID, levels[2].ProductID}
	if strings.Join(got, ",") != "prod-teapot-cast-iron,prod-espresso-machine,prod-teapot-cast-iron" {
		t.Errorf("got %v", got)
	}
	if levels[1].Available != 2 {
		t.Errorf("espresso machine: %+v", levels[1])
	}
	nf := wantErr[*NotFound](t, errOf(s.GetStock([]string{"prod-chemex", "prod-unicorn"})))
	if nf.ID != "prod-unicorn" || !strings.Contains(nf.Error(), "prod-unicorn") {
		t.Errorf("got %v", nf)
	}
}

// errOf and errOf3 keep only the error of a call, to assert on it inline.
func errOf[T any](_ T, err error) error { return err }

func errOf3[T any](_ T, _ bool, err error) error { return err }

func TestLifeCycleCommit(t *testing.T) {
	s, _ := openTemp(t)
	lines := []Line{{"prod-chemex", 3}, {"prod-moka-pot", 1}}
	chemex := level(t, s, "prod-chemex").Available
	r, err := s.Reserve("order-1", lines)
	if err != nil || r.Status != Reserved || r.OrderID != "order-1" || !sameLines(r.Lines, lines) {
		t.Fatalf("reserve: %+v %v", r, err)
	}
	wantLevel(t, s, "prod-chemex", chemex-3, 3)
	r, err = s.Commit("order-1")
	if err != nil || r.Status != Committed {
		t.Fatalf("commit: %+v %v", r, err)
	}
	wantLevel(t, s, "prod-chemex", chemex-3, 0)
	// Idempotent: the same answer, and stock untouched.
	if r, err = s.Commit("order-1"); err != nil || r.Status != Committed {
		t.Fatalf("commit again: %+v %v", r, err)
	}
	if r, err = s.Reserve("order-1", lines); err != nil || r.Status != Committed {
		t.Fatalf("reserve after commit: %+v %v", r, err)
	}
	wantLevel(t, s, "prod-chemex", chemex-3, 0)
	wantErr[*FailedPrecondition](t, errOf3(s.Release("order-1")))
}

func TestLifeCycleRelease(t *testing.T) {
	s, _ := openTemp(t)
	chemex := level(t, s, "prod-chemex").Available
	if _, err := s.Reserve("order-2", []Line{{"prod-chemex", 2}}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second release returns the same, changing nothing
		r, found, err := s.Release("order-2")
		if err != nil || !found || r.Status != Released || r.Lines[0] != (Line{"prod-chemex", 2}) {
			t.Fatalf("release: %+v %v %v", r, found, err)
		}
		wantLevel(t, s, "prod-chemex", chemex, 0)
	}
	fp := wantErr[*FailedPrecondition](t, errOf(s.Commit("order-2")))
	if !strings.Contains(fp.Error(), "released") {
		t.Errorf("got %v", fp)
	}
	r, err := s.Reserve("order-2", []Line{{"prod-chemex", 2}})
	if err != nil || r.Status != Released {
		t.Fatalf("a released order is not reserved again: %+v %v", r, err)
	}
	wantLevel(t, s, "prod-chemex", chemex, 0)
}

func TestReleaseWithoutReservationRecordsNothing(t *testing.T) {
	s, _ := openTemp(t)
	if _, found, err := s.Release("order-never"); err != nil || found {
		t.Fatalf("got found=%v err=%v", found, err)
	}
	// Nothing recorded: a later reservation for that order still works.
	if r, err := s.Reserve("order-never", []Line{{"prod-chemex", 1}}); err != nil || r.Status != Reserved {
		t.Fatalf("got %+v %v", r, err)
	}
}

func TestCommitWithoutReservation(t *testing.T) {
	s, _ := openTemp(t)
	nf := wantErr[*NotFound](t, errOf(s.Commit("order-404")))
	if !strings.Contains(nf.Error(), "order-404") {
		t.Errorf("got %v", nf)
	}
}

func TestReserveIsIdempotentByOrder(t *testing.T) {
	s, _ := openTemp(t)
	tamper := level(t, s, "prod-tamper").Available
	first, err := s.Reserve("order-3", []Line{{"prod-chemex", 1}, {"prod-tamper", 2}})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Reserve("order-3", []Line{{"prod-tamper", 2}, {"prod-chemex", 1}})
	if err != nil || !sameLines(again.Lines, first.Lines) || again.Status != Reserved {
		t.Fatalf("got %+v %v", again, err)
	}
	wantLevel(t, s, "prod-tamper", tamper-2, 2)
	for _, other := range [][]Line{{{"prod-chemex", 1}}, {{"prod-chemex", 2}, {"prod-tamper", 2}}} {
		wantErr[*AlreadyExists](t, errOf(s.Reserve("order-3", other)))
	}
}

func TestReserveIsAllOrNothing(t *testing.T) {
	s, _ := openTemp(t)
	chemex := level(t, s, "prod-chemex").Available
	fp := wantErr[*FailedPrecondition](t, errOf(s.Reserve("order-4",
		[]Line{{"prod-chemex", 1}, {"prod-espresso-machine", 3}})))
	for _, part := range []string{"prod-espresso-machine", "2 available", "3 requested"} {
		if !strings.Contains(fp.Error(), part) {
			t.Errorf("%q lacks %q", fp, part)
		}
	}
	nf := wantErr[*NotFound](t, errOf(s.Reserve("order-4",
		[]Line{{"prod-chemex", 1}, {"prod-espresso-machine", 3}, {"prod-unicorn", 1}})))
	if nf.ID != "prod-unicorn" {
		t.Errorf("got %v", nf)
	}
	wantLevel(t, s, "prod-chemex", chemex, 0)
	wantLevel(t, s, "prod-espresso-machine", 2, 0)
	// The failures recorded no reservation for the order.
	wantErr[*NotFound](t, errOf(s.Commit("order-4")))
	if _, err := s.Reserve("order-4", []Line{{"prod-espresso-machine", 2}}); err != nil {
		t.Fatal(err)
	}
	wantLevel(t, s, "prod-espresso-machine", 0, 2)
}

func TestInvalidRequestsChangeNothing(t *testing.T) {
	s, _ := openTemp(t)
	wantInvalid(t, errOf(s.Reserve("", []Line{{"prod-chemex", 1}})), "order_id")
	wantInvalid(t, errOf(s.Commit("")), "order_id")
	wantInvalid(t, errOf3(s.Release("")), "order_id")
	wantInvalid(t, errOf(s.GetStock(nil)), "product_ids")
}

func TestStockSurvivesReopen(t *testing.T) {
	s, path := openTemp(t)
	if _, err := s.Reserve("order-5", []Line{{"prod-espresso-machine", 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantLevel(t, s, "prod-espresso-machine", 1, 1) // not seeded again
	if r, err := s.Commit("order-5"); err != nil || r.Lines[0].Quantity != 1 {
		t.Fatalf("got %+v %v", r, err)
	}
}

func TestOpenFailsOnGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bbolt file\n", 500)), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("opened a file that is not bbolt")
	}
}
