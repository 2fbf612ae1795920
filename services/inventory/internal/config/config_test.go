package config

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func lookup(env map[string]string) LookupFunc {
	return func(name string) (string, bool) {
		value, ok := env[name]
		return value, ok
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := FromEnv(lookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr: "0.0.0.0:50053",
		DBPath:     "inventory.db",
		Drain:      500 * time.Millisecond,
		Grace:      10 * time.Second,
		LogLevel:   slog.LevelInfo,
	}
	if cfg != want {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

func TestValuesAreRead(t *testing.T) {
	cfg, err := FromEnv(lookup(map[string]string{
		"GRPC_LISTEN_ADDR":       " 127.0.0.1:0 ",
		"INVENTORY_DB_PATH":      "/data/inventory.db",
		"SHUTDOWN_DRAIN_SECONDS": "0",
		"SHUTDOWN_GRACE_SECONDS": "2.5",
		"FAULT_DELAY_MS":         "150",
		"FAULT_ERROR_PERCENT":    "12.5",
		"LOG_LEVEL":              "warning",
		"OTEL_SDK_DISABLED":      "TRUE",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr:        "127.0.0.1:0",
		DBPath:            "/data/inventory.db",
		Drain:             0,
		Grace:             2500 * time.Millisecond,
		FaultDelay:        150 * time.Millisecond,
		FaultErrorPercent: 12.5,
		LogLevel:          slog.LevelWarn,
		TracingDisabled:   true,
	}
	if cfg != want {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

func TestBlankMeansDefault(t *testing.T) {
	cfg, err := FromEnv(lookup(map[string]string{"LOG_LEVEL": "  ", "OTEL_SDK_DISABLED": "no"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != slog.LevelInfo || cfg.TracingDisabled {
		t.Errorf("got %+v", cfg)
	}
}

func TestMalformedValuesNameTheVariable(t *testing.T) {
	cases := []struct{ name, value string }{
		{"GRPC_LISTEN_ADDR", "localhost"},
		{"GRPC_LISTEN_ADDR", ":50053"},
		{"GRPC_LISTEN_ADDR", "0.0.0.0:65536"},
		{"GRPC_LISTEN_ADDR", "0.0.0.0:-1"},
		{"GRPC_LISTEN_ADDR", "0.0.0.0:port"},
		{"SHUTDOWN_DRAIN_SECONDS", "soon"},
		{"SHUTDOWN_DRAIN_SECONDS", "-1"},
		{"SHUTDOWN_GRACE_SECONDS", "inf"},
		{"SHUTDOWN_GRACE_SECONDS", "NaN"},
		{"FAULT_DELAY_MS", "1.5"},
		{"FAULT_DELAY_MS", "-3"},
		{"FAULT_DELAY_MS", "99999999999999"},
		{"FAULT_ERROR_PERCENT", "101"},
		{"FAULT_ERROR_PERCENT", "-0.1"},
		{"FAULT_ERROR_PERCENT", "half"},
		{"LOG_LEVEL", "verbose"},
	}
	for _, c := range cases {
		t.Run(c.name+"="+c.value, func(t *testing.T) {
			_, err := FromEnv(lookup(map[string]string{c.name: c.value}))
			var cfgErr *Error
			if !errors.As(err, &cfgErr) {
				t.Fatalf("got %v, want a config error", err)
			}
			if cfgErr.Variable != c.name || !strings.HasPrefix(err.Error(), c.name+" ") {
				t.Errorf("error %q does not name %s", err, c.name)
			}
		})
	}
}

func TestFirstErrorWins(t *testing.T) {
	_, err := FromEnv(lookup(map[string]string{"GRPC_LISTEN_ADDR": "x", "LOG_LEVEL": "x"}))
	if err == nil || !strings.HasPrefix(err.Error(), "GRPC_LISTEN_ADDR") {
		t.Errorf("got %v", err)
	}
}
