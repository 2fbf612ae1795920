package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
)

func TestGetStock(t *testing.T) {
	f := start(t, Options{})
	res, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{
		ProductIds: []string{"prod-espresso-machine", "prod-chemex", "prod-espresso-machine"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range res.GetStockLevels() {
		got = append(got, fmt.Sprintf("%s=%d/%d", l.GetProductId(), l.GetAvailable(), l.GetReserved()))
	}
	if got[0] != "prod-espresso-machine=2/0" || got[2] != got[0] || !strings.HasPrefix(got[1], "prod-chemex=") {
		t.Errorf("got %v", got)
	}
	_, err = f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex", "prod-unicorn"}})
	if st := wantCode(t, err, codes.NotFound); !strings.Contains(st.Message(), "prod-unicorn") {
		t.Errorf("message %q does not name the product", st.Message())
	}
}

func TestReservationLifeCycle(t *testing.T) {
	f := start(t, Options{})
	c := ctx(t)
	lines := []*pb.ReservationLine{line("prod-chemex", 2), line("prod-tamper", 1)}
	res, err := f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o-1", Lines: lines})
	want := &pb.Reservation{OrderId: "o-1", Lines: lines, Status: pb.ReservationStatus_RESERVATION_STATUS_RESERVED}
	if err != nil || !proto.Equal(res.GetReservation(), want) {
		t.Fatalf("reserve: %v %v", res, err)
	}
	// A retry with the lines reordered returns the same reservation.
	res, err = f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o-1",
		Lines: []*pb.ReservationLine{line("prod-tamper", 1), line("prod-chemex", 2)}})
	if err != nil || !proto.Equal(res.GetReservation(), want) {
		t.Fatalf("retry: %v %v", res, err)
	}
	_, err = f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o-1", Lines: lines[:1]})
	wantCode(t, err, codes.AlreadyExists)

	for range 2 {
		res, err := f.client.CommitStock(c, &pb.CommitStockRequest{OrderId: "o-1"})
		if err != nil || res.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_COMMITTED {
			t.Fatalf("commit: %v %v", res, err)
		}
	}
	_, err = f.client.ReleaseStock(c, &pb.ReleaseStockRequest{OrderId: "o-1"})
	wantCode(t, err, codes.FailedPrecondition)

	_, err = f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o-2", Lines: lines})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		res, err := f.client.ReleaseStock(c, &pb.ReleaseStockRequest{OrderId: "o-2"})
		if err != nil || res.GetReservation().GetStatus() != pb.ReservationStatus_RESERVATION_STATUS_RELEASED {
			t.Fatalf("release: %v %v", res, err)
		}
	}
	_, err = f.client.CommitStock(c, &pb.CommitStockRequest{OrderId: "o-2"})
	wantCode(t, err, codes.FailedPrecondition)
}

func TestOrdersWithoutReservation(t *testing.T) {
	f := start(t, Options{})
	res, err := f.client.ReleaseStock(ctx(t), &pb.ReleaseStockRequest{OrderId: "o-none"})
	if err != nil || res.Reservation != nil {
		t.Fatalf("release: %v %v, want OK with no reservation", res, err)
	}
	_, err = f.client.CommitStock(ctx(t), &pb.CommitStockRequest{OrderId: "o-none"})
	if st := wantCode(t, err, codes.NotFound); !strings.Contains(st.Message(), "o-none") {
		t.Errorf("message %q does not name the order", st.Message())
	}
}

func TestReserveFailures(t *testing.T) {
	f := start(t, Options{})
	_, err := f.client.ReserveStock(ctx(t), &pb.ReserveStockRequest{OrderId: "o-3",
		Lines: []*pb.ReservationLine{line("prod-chemex", 1), line("prod-espresso-machine", 3)}})
	st := wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(st.Message(), "prod-espresso-machine") {
		t.Errorf("message %q", st.Message())
	}
	_, err = f.client.ReserveStock(ctx(t), &pb.ReserveStockRequest{OrderId: "o-3",
		Lines: []*pb.ReservationLine{line("prod-unicorn", 1)}})
	if st := wantCode(t, err, codes.NotFound); !strings.Contains(st.Message(), "prod-unicorn") {
		t.Errorf("message %q", st.Message())
	}
}

func TestInvalidArgumentsNameTheField(t *testing.T) {
	f := start(t, Options{})
	c := ctx(t)
	many := make([]string, 101)
	for i := range many {
		many[i] = "prod-chemex"
	}
	long := strings.Repeat("x", 129)
	ok := line("prod-chemex", 1)
	calls := map[string]func() error{
		"product_ids": func() error { _, err := f.client.GetStock(c, &pb.GetStockRequest{}); return err },
		"product_ids ": func() error {
			_, err := f.client.GetStock(c, &pb.GetStockRequest{ProductIds: many})
			return err
		},
		"product_ids[3]": func() error {
			_, err := f.client.GetStock(c, &pb.GetStockRequest{ProductIds: []string{"a", "b", "c", ""}})
			return err
		},
		"product_ids[0]": func() error {
			_, err := f.client.GetStock(c, &pb.GetStockRequest{ProductIds: []string{long}})
			return err
		},
		"order_id": func() error {
			_, err := f.client.ReserveStock(c, &pb.ReserveStockRequest{Lines: []*pb.ReservationLine{ok}})
			return err
		},
		"lines": func() error { _, err := f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o"}); return err },
		"lines[0].product_id": func() error {
			_, err := f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o",
				Lines: []*pb.ReservationLine{line("", 1)}})
			return err
		},
		"lines[2].product_id": func() error {
			_, err := f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o",
				Lines: []*pb.ReservationLine{ok, line("prod-tamper", 1), ok}})
			return err
		},
		"lines[1].quantity": func() error {
			_, err := f.client.ReserveStock(c, &pb.ReserveStockRequest{OrderId: "o",
				Lines: []*pb.ReservationLine{ok, line("prod-tamper", 0), line("", 1)}})
			return err
		},
		"order_id ": func() error { _, err := f.client.CommitStock(c, &pb.CommitStockRequest{}); return err },
		"order_id  ": func() error {
			_, err := f.client.ReleaseStock(c, &pb.ReleaseStockRequest{})
			return err
		},
	}
	for name, call := range calls {
		field := strings.TrimSpace(name) // trailing blanks only keep map keys apart
		t.Run(name, func(t *testing.T) {
			st := wantCode(t, call(), codes.InvalidArgument)
			if !strings.HasPrefix(st.Message(), field+": ") {
				t.Errorf("message %q does not start with %q", st.Message(), field+": ")
			}
			var violations []*errdetails.BadRequest_FieldViolation
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					violations = append(violations, br.GetFieldViolations()...)
				}
			}
			if len(violations) != 1 || violations[0].GetField() != field {
				t.Errorf("violations %v, want one on %s", violations, field)
			}
		})
	}
}

func TestConcurrentReservationsOverTheWire(t *testing.T) {
	f := start(t, Options{})
	codesSeen := make([]codes.Code, 50)
	var wg sync.WaitGroup
	for i := range codesSeen {
		wg.Go(func() {
			_, err := f.client.ReserveStock(ctx(t), &pb.ReserveStockRequest{
				OrderId: fmt.Sprintf("o-%d", i), Lines: []*pb.ReservationLine{line("prod-teapot-cast-iron", 1)}})
			codesSeen[i] = status.Code(err)
		})
	}
	wg.Wait()
	count := map[codes.Code]int{}
	for _, c := range codesSeen {
		count[c]++
	}
	if count[codes.OK] != 10 || count[codes.FailedPrecondition] != 40 {
		t.Errorf("got %v, want 10 OK and 40 FAILED_PRECONDITION", count)
	}
}

func TestStoreFailureIsInternal(t *testing.T) {
	f := start(t, Options{})
	if err := f.store.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := f.client.GetStock(ctx(t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	if st := wantCode(t, err, codes.Internal); st.Message() != "internal error" {
		t.Errorf("message %q leaks details", st.Message())
	}
}
