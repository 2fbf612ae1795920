package server

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
)

// switchTimeout bounds the wait for a change of the fault file to show:
// the file is looked at once a second, the rest is a noisy machine's margin.
const switchTimeout = 15 * time.Second

// eventually polls cond until it holds, failing the test after switchTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(switchTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", switchTimeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeFaults(t *testing.T, path, text string) {
	t.Helper()
	// Through a rename, as an editor or a ConfigMap does: never half a file.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// calls are the two methods the fault file test makes, each timed.
type calls struct {
	t *testing.T
	f *fixture
	n int
}

func (c *calls) getStock() (time.Duration, error) {
	start := time.Now()
	_, err := c.f.client.GetStock(ctx(c.t), &pb.GetStockRequest{ProductIds: []string{"prod-chemex"}})
	return time.Since(start), err
}

func (c *calls) reserve() (time.Duration, error) {
	c.n++
	start := time.Now()
	_, err := c.f.client.ReserveStock(ctx(c.t), &pb.ReserveStockRequest{
		OrderId: c.t.Name() + "-" + time.Now().Format(time.RFC3339Nano), Lines: []*pb.ReservationLine{line("prod-chemex", 1)}})
	return time.Since(start), err
}

func TestTheFaultFileIsSwitchedAtRunTime(t *testing.T) {
	logs := meshtlstest.CaptureLogs(t)
	path := filepath.Join(t.TempDir(), "faults.yaml")
	f := start(t, Options{Faults: Faults{File: path, Service: "inventory"}})
	c := &calls{t: t, f: f}
	if _, err := c.reserve(); err != nil {
		t.Fatalf("no file yet: %v", err)
	}

	// One method fails, with the file's code; the others and health do not.
	writeFaults(t, path, "faults:\n  inventory:\n    ReserveStock: {error_ratio: 1, error_code: RESOURCE_EXHAUSTED}\n")
	var err error
	eventually(t, "ReserveStock failing", func() bool {
		_, err = c.reserve()
		return err != nil
	})
	const want = "injected fault in /shop.inventory.v1.InventoryService/ReserveStock"
	if st := wantCode(t, err, codes.ResourceExhausted); st.Message() != want {
		t.Errorf("message %q, want %q", st.Message(), want)
	}
	if _, err := c.getStock(); err != nil {
		t.Errorf("GetStock faulted too: %v", err)
	}
	if got := servingStatus(t, f, ServiceName); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v", got)
	}

	// Every method delayed, none failing.
	writeFaults(t, path, "faults:\n  inventory:\n    \"*\": {delay_ms: 200}\n")
	eventually(t, "ReserveStock succeeding again", func() bool {
		_, err = c.reserve()
		return err == nil
	})
	for _, call := range []func() (time.Duration, error){c.getStock, c.reserve} {
		if took, err := call(); err != nil || took < 150*time.Millisecond {
			t.Errorf("delayed call: %v after %v, want OK after 200 ms", err, took)
		}
	}

	// A broken file: a warning naming it, the delay stays.
	writeFaults(t, path, "faults:\n  inventory:\n    \"*\": {delay_ms: soon}\n")
	// The file is looked at when calls come, so the poll makes calls.
	eventually(t, "a warning about the broken file", func() bool {
		_, _ = c.getStock()
		return strings.Contains(logs.String(), path+`:3: faults.inventory.*.delay_ms: must be an integer, got \"soon\"`)
	})
	if took, err := c.getStock(); err != nil || took < 150*time.Millisecond {
		t.Errorf("after the broken file: %v after %v, want the delay kept", err, took)
	}

	// Gone: calls are quick and OK again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "GetStock quick again", func() bool {
		took, err := c.getStock()
		return err == nil && took < 100*time.Millisecond
	})
	if _, err := c.reserve(); err != nil {
		t.Errorf("ReserveStock after the file went: %v", err)
	}
}

// The control: without MESH_FAULTS_FILE the same file changes nothing.
func TestWithoutTheSettingTheFileIsNotRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "faults.yaml")
	f := start(t, Options{})
	c := &calls{t: t, f: f}
	writeFaults(t, path, "faults:\n  inventory:\n    ReserveStock: {error_ratio: 1}\n")
	time.Sleep(1500 * time.Millisecond)
	if _, err := c.reserve(); err != nil {
		t.Errorf("faulted without a fault file: %v", err)
	}
}

func TestTheFileComesBeforeTheStartTimeRule(t *testing.T) {
	path := filepath.Join(t.TempDir(), "faults.yaml")
	writeFaults(t, path, "faults:\n  inventory:\n    GetStock: {error_ratio: 1, error_code: INTERNAL}\n")
	f := start(t, Options{Faults: Faults{ErrorPercent: 100, File: path}})
	c := &calls{t: t, f: f}
	_, err := c.getStock()
	wantCode(t, err, codes.Internal)
	_, err = c.reserve()
	wantCode(t, err, codes.Unavailable) // no file rule: FAULT_ERROR_PERCENT's
	short, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := f.health.Check(short, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health faulted: %v", err)
	}
}
