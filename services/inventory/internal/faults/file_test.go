package faults

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/services/inventory/internal/meshtls/meshtlstest"
)

const getStock = "/shop.inventory.v1.InventoryService/GetStock"

// clock is a fake time for File.now: only tick moves it.
type clock struct{ now time.Time }

func (c *clock) tick() { c.now = c.now.Add(CheckInterval) }

func watch(t *testing.T, path string) (*File, *clock) {
	t.Helper()
	f := NewFile(path, "inventory")
	c := &clock{now: time.Now()}
	f.now = func() time.Time { return c.now }
	return f, c
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestTheFileIsReloadedAtMostOncePerInterval(t *testing.T) {
	logs := meshtlstest.CaptureLogs(t)
	path := filepath.Join(t.TempDir(), "faults.yaml")
	f, c := watch(t, path)
	if !strings.Contains(logs.String(), "no fault file at "+path+" yet") {
		t.Errorf("missing file not logged: %s", logs)
	}
	if n := f.Rules().Len(); n != 0 {
		t.Fatalf("%d rules without a file", n)
	}

	write(t, path, "faults: {inventory: {GetStock: {error_ratio: 1}}}\n")
	if n := f.Rules().Len(); n != 0 {
		t.Errorf("read again before the interval: %d rules", n)
	}
	c.tick()
	if rule, ok := f.Rules().Lookup("GetStock"); !ok || rule.ErrorRatio != 1 {
		t.Fatalf("after the interval: %+v %v", rule, ok)
	}
	if !strings.Contains(logs.String(), "fault rules from "+path+": 1 for inventory") {
		t.Errorf("new rules not logged: %s", logs)
	}

	// A bad file: one warning naming the file and the problem, the rules stay.
	write(t, path, "faults: {inventory: {GetStock: {error_ratio: 2}}}\n")
	for range 3 {
		c.tick()
		if rule, ok := f.Rules().Lookup("GetStock"); !ok || rule.ErrorRatio != 1 {
			t.Fatalf("bad file dropped the rules: %+v %v", rule, ok)
		}
	}
	warning := path + ":1: faults.inventory.GetStock.error_ratio: must be 0 to 1, got 2"
	if n := lines(logs.String(), `"level":"WARN"`, warning); n != 1 {
		t.Errorf("%d warnings %q: %s", n, warning, logs)
	}

	// Gone: no rules, said once.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c.tick()
		if n := f.Rules().Len(); n != 0 {
			t.Fatalf("%d rules after the file went", n)
		}
	}
	if n := lines(logs.String(), `"level":"INFO"`, "fault file "+path+" is gone"); n != 1 {
		t.Errorf("gone logged %d times: %s", n, logs)
	}

	// Back again, with a rule for every method.
	write(t, path, "faults:\n  inventory:\n    \"*\": {delay_ms: 5}\n")
	c.tick()
	if rule, ok := f.Rules().Lookup("ReleaseStock"); !ok || rule.Delay != 5*time.Millisecond {
		t.Errorf("file back: %+v %v", rule, ok)
	}
}

// lines counts the log lines holding every one of parts.
func lines(logs string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, part := range parts {
			all = all && strings.Contains(line, part)
		}
		if all {
			n++
		}
	}
	return n
}

func TestABadFileAtStartIsNotFatal(t *testing.T) {
	logs := meshtlstest.CaptureLogs(t)
	path := filepath.Join(t.TempDir(), "faults.yaml")
	write(t, path, "faults: [\n")
	f := NewFile(path, "inventory")
	if n := f.Rules().Len(); n != 0 {
		t.Errorf("%d rules from a bad file", n)
	}
	if !strings.Contains(logs.String(), path+":1: (document): not valid YAML") {
		t.Errorf("no warning: %s", logs)
	}
}

func TestTheFileComesBeforeTheEnvironment(t *testing.T) {
	meshtlstest.CaptureLogs(t)
	path := filepath.Join(t.TempDir(), "faults.yaml")
	write(t, path, "faults:\n  inventory:\n    \"*\": {delay_ms: 7}\n    GetStock: {error_ratio: 0.5, error_code: INTERNAL}\n")
	env := &Rule{Delay: time.Second, ErrorRatio: 0.25, Code: codes.Unavailable}
	cases := []struct {
		name   string
		inject *Injector
		method string
		want   Rule
		ok     bool
	}{
		{"method's own", NewInjector(NewFile(path, "inventory"), env), getStock,
			Rule{ErrorRatio: 0.5, Code: codes.Internal}, true},
		{"every method", NewInjector(NewFile(path, "inventory"), env), "/shop.inventory.v1.InventoryService/ReserveStock",
			Rule{Delay: 7 * time.Millisecond, Code: codes.Unavailable}, true},
		{"environment", NewInjector(NewFile(path, "payments"), env), getStock, *env, true},
		{"no file", NewInjector(nil, env), getStock, *env, true},
		{"nothing", NewInjector(NewFile(path, "payments"), nil), getStock, Rule{}, false},
	}
	for _, c := range cases {
		if got, ok := c.inject.RuleFor(c.method); got != c.want || ok != c.ok {
			t.Errorf("%s: got %+v %v, want %+v %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestInject(t *testing.T) {
	always := Rule{ErrorRatio: 1, Code: codes.ResourceExhausted}
	err := always.Inject(t.Context(), getStock)
	if s := status.Convert(err); s.Code() != codes.ResourceExhausted || s.Message() != "injected fault in "+getStock {
		t.Errorf("ratio 1: %v", err)
	}
	if err := (Rule{Code: codes.Unavailable}).Inject(t.Context(), getStock); err != nil {
		t.Errorf("ratio 0: %v", err)
	}
	// The delay ends with the call.
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	err = Rule{Delay: time.Hour, ErrorRatio: 1, Code: codes.Internal}.Inject(ctx, getStock)
	if status.Code(err) != codes.Canceled || time.Since(start) > 10*time.Second {
		t.Errorf("cancelled delay: %v after %v", err, time.Since(start))
	}
	ctx, cancel = context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := (Rule{Delay: time.Hour}).Inject(ctx, getStock); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("deadline during the delay: %v", err)
	}
}

func TestSomeCallsFailAtARatio(t *testing.T) {
	rule := Rule{ErrorRatio: 0.3, Code: codes.Unavailable}
	failed := 0
	for range 2000 {
		if rule.Inject(t.Context(), getStock) != nil {
			failed++
		}
	}
	// 600 expected; the bounds are many standard deviations (about 20) away.
	if failed < 400 || failed > 800 {
		t.Errorf("%d of 2000 failed at ratio 0.3", failed)
	}
}
