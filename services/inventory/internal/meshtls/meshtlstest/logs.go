package meshtlstest

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
)

// LogBuffer is what slog's default logger wrote, as JSON lines, while a
// test ran. It is safe for concurrent use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// CaptureLogs sends slog's default logger to a LogBuffer, as JSON, until
// the test ends.
func CaptureLogs(t testing.TB) *LogBuffer {
	t.Helper()
	logs := &LogBuffer{}
	previous := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(logs, nil)))
	t.Cleanup(func() { slog.SetDefault(previous) })
	return logs
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything logged so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
