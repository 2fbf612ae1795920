package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/stock"
)

// servicer is protobuf in, one domain call, protobuf out; nothing else.
type servicer struct {
	pb.UnimplementedInventoryServiceServer
	store *stock.Store
}

var _ pb.InventoryServiceServer = (*servicer)(nil)

func (s *servicer) GetStock(ctx context.Context, req *pb.GetStockRequest) (*pb.GetStockResponse, error) {
	levels, err := s.store.GetStock(req.GetProductIds())
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	out := make([]*pb.StockLevel, len(levels))
	for i, l := range levels {
		out[i] = &pb.StockLevel{ProductId: l.ProductID, Available: l.Available, Reserved: l.Reserved}
	}
	return &pb.GetStockResponse{StockLevels: out}, nil
}

func (s *servicer) ReserveStock(ctx context.Context, req *pb.ReserveStockRequest) (*pb.ReserveStockResponse, error) {
	lines := make([]stock.Line, len(req.GetLines()))
	for i, l := range req.GetLines() {
		lines[i] = stock.Line{ProductID: l.GetProductId(), Quantity: l.GetQuantity()}
	}
	r, err := s.store.Reserve(req.GetOrderId(), lines)
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	return &pb.ReserveStockResponse{Reservation: reservationToProto(r)}, nil
}

func (s *servicer) CommitStock(ctx context.Context, req *pb.CommitStockRequest) (*pb.CommitStockResponse, error) {
	r, err := s.store.Commit(req.GetOrderId())
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	return &pb.CommitStockResponse{Reservation: reservationToProto(r)}, nil
}

func (s *servicer) ReleaseStock(ctx context.Context, req *pb.ReleaseStockRequest) (*pb.ReleaseStockResponse, error) {
	r, found, err := s.store.Release(req.GetOrderId())
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	if !found {
		return &pb.ReleaseStockResponse{}, nil // the contract: unset, not empty
	}
	return &pb.ReleaseStockResponse{Reservation: reservationToProto(r)}, nil
}

var statusToProto = map[stock.Status]pb.ReservationStatus{
	stock.Reserved:  pb.ReservationStatus_RESERVATION_STATUS_RESERVED,
	stock.Committed: pb.ReservationStatus_RESERVATION_STATUS_COMMITTED,
	stock.Released:  pb.ReservationStatus_RESERVATION_STATUS_RELEASED,
}

func reservationToProto(r stock.Reservation) *pb.Reservation {
	lines := make([]*pb.ReservationLine, len(r.Lines))
	for i, l := range r.Lines {
		lines[i] = &pb.ReservationLine{ProductId: l.ProductID, Quantity: l.Quantity}
	}
	return &pb.Reservation{OrderId: r.OrderID, Lines: lines, Status: statusToProto[r.Status]}
}

// toStatus maps each domain error kind to its one status code (see the
// stock.Error doc comment); anything else is logged and becomes INTERNAL.
func toStatus(ctx context.Context, err error) error {
	var (
		invalid  *stock.InvalidArgument
		notFound *stock.NotFound
		failed   *stock.FailedPrecondition
		exists   *stock.AlreadyExists
	)
	switch {
	case errors.As(err, &invalid):
		return badRequest(invalid.Field, invalid.Problem)
	case errors.As(err, &notFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.As(err, &failed):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &exists):
		return status.Error(codes.AlreadyExists, err.Error())
	}
	method, _ := grpc.Method(ctx)
	slog.ErrorContext(ctx, "internal error", "method", method, "error", err.Error())
	return errInternal
}

// badRequest is INVALID_ARGUMENT with a google.rpc.BadRequest detail naming
// the field, so clients in any language can point at the exact input; the
// message repeats it for people reading grpcurl output.
func badRequest(field, problem string) error {
	st := status.New(codes.InvalidArgument, field+": "+problem)
	detailed, err := st.WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: problem}},
	})
	if err != nil { // only if the detail cannot be marshalled, which it always can
		return st.Err()
	}
	return detailed.Err()
}
