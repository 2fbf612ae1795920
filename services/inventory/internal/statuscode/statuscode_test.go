package statuscode

import (
	"testing"

	"google.golang.org/grpc/codes"
)

func TestNamesRoundTrip(t *testing.T) {
	for code := codes.OK; code <= codes.Unauthenticated; code++ {
		name := Name(code)
		if got, ok := Parse(name); !ok || got != code {
			t.Errorf("Parse(Name(%v)) = %v, %v", code, got, ok)
		}
	}
	if Name(codes.Canceled) != "CANCELLED" || Name(codes.Unavailable) != "UNAVAILABLE" {
		t.Errorf("names: %s %s", Name(codes.Canceled), Name(codes.Unavailable))
	}
	if Name(codes.Code(99)) != "UNKNOWN" {
		t.Errorf("code 99: %s", Name(codes.Code(99)))
	}
	for _, bad := range []string{"", "unavailable", "Unavailable", "CANCELED"} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
