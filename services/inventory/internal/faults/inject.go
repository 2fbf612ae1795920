package faults

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc/status"
)

// Injector picks the rule for each call: the file's (when there is a file)
// over the environment's.
type Injector struct {
	file *File // nil without a fault file
	env  *Rule // nil without FAULT_DELAY_MS / FAULT_ERROR_PERCENT
}

// NewInjector injects the rules of file (nil for none) over env (nil for
// none).
func NewInjector(file *File, env *Rule) *Injector {
	return &Injector{file: file, env: env}
}

// RuleFor is the rule for a call of fullMethod (/pkg.Service/Method): the
// file's under the method's short name, else under Every, else the
// environment's; false when there is none.
func (i *Injector) RuleFor(fullMethod string) (Rule, bool) {
	if i.file != nil {
		method := fullMethod[strings.LastIndex(fullMethod, "/")+1:]
		if rule, ok := i.file.Rules().Lookup(method); ok {
			return rule, true
		}
	}
	if i.env != nil {
		return *i.env, true
	}
	return Rule{}, false
}

// Inject applies the rule for the call of fullMethod: nil means go on with
// the call, an error is the status the call ends with (the injected one, or
// CANCELLED / DEADLINE_EXCEEDED when the call ended during the delay).
func (i *Injector) Inject(ctx context.Context, fullMethod string) error {
	rule, ok := i.RuleFor(fullMethod)
	if !ok {
		return nil
	}
	return rule.Inject(ctx, fullMethod)
}

// Inject waits the rule's delay, ending early when ctx ends, then fails a
// share ErrorRatio of the calls with the rule's code.
func (r Rule) Inject(ctx context.Context, fullMethod string) error {
	if r.Delay > 0 {
		timer := time.NewTimer(r.Delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	// Float64 is in [0, 1): a ratio of 1 fails every call, 0 none.
	if r.ErrorRatio > 0 && rand.Float64() < r.ErrorRatio {
		return status.Errorf(r.Code, "injected fault in %s", fullMethod)
	}
	return nil
}
