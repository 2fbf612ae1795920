package faults

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// CheckInterval is how often, at most, File looks at its file again.
const CheckInterval = time.Second

// File is one service's rules in a fault file that may change, appear or
// disappear while the server runs.
//
// It is checked lazily, by the calls that ask for rules: at most once per
// CheckInterval, one of them stats the file (size, modification time and
// inode) and, when that changed, reads it again; the others meanwhile use
// the rules in force without waiting. No goroutine to start or stop, and an
// idle server does no work; the first call after a change still sees it.
//
// A good file replaces the rules at once; a missing one means no rules; a
// bad one (not YAML, against the schema, unreadable) is logged as a
// WARNING and changes nothing: it is run-time state, and a typo during a
// demo must not stop the service nor the faults already injected.
type File struct {
	path    string
	service string
	now     func() time.Time // time.Now; a fake clock in tests

	rules atomic.Pointer[Rules]
	due   atomic.Int64 // UnixNano of the next check

	mu      sync.Mutex  // held by the one call checking
	seen    os.FileInfo // the file as last read; nil when missing
	problem string      // the last stat or read failure logged
}

// NewFile reads service's rules in the file at path, if there is one, and
// logs what it found.
func NewFile(path, service string) *File {
	f := &File{path: path, service: service, now: time.Now}
	f.rules.Store(&Rules{})
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		slog.Info(fmt.Sprintf("no fault file at %s yet: no fault rules from it", path),
			"faults_file", path)
	}
	f.mu.Lock()
	f.check()
	f.mu.Unlock()
	return f
}

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Rules are the rules in force, checking the file first when it is due.
func (f *File) Rules() *Rules {
	if now := f.now().UnixNano(); now >= f.due.Load() && f.mu.TryLock() {
		// Another call may have checked between the Load and the lock.
		if now >= f.due.Load() {
			f.check()
		}
		f.mu.Unlock()
	}
	return f.rules.Load()
}

// check looks at the file and takes in what changed; f.mu is held.
func (f *File) check() {
	f.due.Store(f.now().Add(CheckInterval).UnixNano())
	info, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		f.rules.Store(&Rules{})
		if f.seen != nil {
			slog.Info(fmt.Sprintf("fault file %s is gone: no fault rules from it", f.path),
				"faults_file", f.path)
		}
		f.seen, f.problem = nil, ""
		return
	}
	if err != nil {
		f.fail(err.Error())
		return
	}
	if f.seen != nil && sameFile(f.seen, info) {
		return
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		f.fail(err.Error())
		return
	}
	f.seen, f.problem = info, ""
	rules, err := Parse(data, f.path, f.service)
	if err != nil {
		// The error names the file, line and key.
		slog.Warn(fmt.Sprintf("bad fault file, the rules in force stay: %v", err),
			"faults_file", f.path, "error", err.Error())
		return
	}
	f.rules.Store(rules)
	slog.Info(fmt.Sprintf("fault rules from %s: %d for %s", f.path, rules.Len(), f.service),
		"faults_file", f.path, "rules", rules.Len(), "for_service", f.service)
}

// fail logs a failure to stat or read the file once, not every second.
func (f *File) fail(problem string) {
	if problem != f.problem {
		slog.Warn(fmt.Sprintf("fault file %s unreadable, the rules in force stay: %s", f.path, problem),
			"faults_file", f.path, "error", problem)
		f.problem = problem
	}
}

// sameFile reports whether the file is the one last read: same inode, size
// and modification time. Writing it anew, or replacing it (an editor's or
// kubectl's rename), changes at least one of them.
func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}
