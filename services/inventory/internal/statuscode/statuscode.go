// Package statuscode names gRPC status codes as the gRPC specification and
// the other languages do (UNAVAILABLE, CANCELLED), where grpc-go's own
// String gives Go-style names (Unavailable, Canceled). The fault file takes
// these names and the metrics carry them, alike in all three languages.
package statuscode

import "google.golang.org/grpc/codes"

// names is indexed by code: codes 0-16 are the whole specification.
var names = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// Name is code's name in the specification; a code outside it (which no
// peer should send) is UNKNOWN, as grpc-go treats it.
func Name(code codes.Code) string {
	if int(code) < len(names) {
		return names[code]
	}
	return names[codes.Unknown]
}

// Parse is the code named name (exactly, upper case), and false for none.
func Parse(name string) (codes.Code, bool) {
	for code, n := range names {
		if n == name {
			return codes.Code(code), true
		}
	}
	return 0, false
}
