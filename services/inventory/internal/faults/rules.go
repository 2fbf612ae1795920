// Package faults is the service's fault injection: delays and errors on its
// own RPCs, to show deadlines, retries and breakers at work.
//
// The rules come from two places. The fault file (MESH_FAULTS_FILE) is read
// while the server runs and re-read when it changes (File), so faults are
// switched on and off without a restart; its shape, the same in all three
// languages:
//
//	version: 1                      # optional; if present must be 1
//	faults:                         # optional; null/empty = no faults
//	  payments:                     # a service name
//	    "*": {delay_ms: 300}        # every method of the service
//	  inventory:
//	    ReserveStock: {error_ratio: 0.3, error_code: UNAVAILABLE}
//
// Below it, the start-time rule of FAULT_DELAY_MS and FAULT_ERROR_PERCENT.
// For a call to method M the rule is the file's under M, else under "*",
// else the environment's (Injector). Health and reflection are never
// faulted: the server does not ask for them.
package faults

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"gopkg.in/yaml.v3"

	"github.com/shopmesh/shopmesh/services/inventory/internal/statuscode"
)

// Rule is what to do to one call: wait Delay, then fail with Code for a
// share ErrorRatio of the calls.
type Rule struct {
	Delay      time.Duration
	ErrorRatio float64    // 0..1
	Code       codes.Code // never OK
}

// Every is the method key that stands for each method of the service.
const Every = "*"

// Rules are one service's rules from a fault file, by short method name
// (ReserveStock) or Every. The zero value and nil have none. Immutable.
type Rules struct {
	methods map[string]Rule
}

// Len is the number of rules.
func (r *Rules) Len() int {
	if r == nil {
		return 0
	}
	return len(r.methods)
}

// Lookup is the rule for method (a short name): its own, else Every's.
func (r *Rules) Lookup(method string) (Rule, bool) {
	if r == nil {
		return Rule{}, false
	}
	if rule, ok := r.methods[method]; ok {
		return rule, true
	}
	rule, ok := r.methods[Every]
	return rule, ok
}

// Error is a fault file that is not valid YAML or breaks the schema:
// `<source>:<line>: <key>: <problem>`, as the policy reader words it.
type Error struct {
	Source  string
	Line    int // 1-based; 0 when unknown
	Key     string
	Problem string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", e.Source, e.Line, e.Key, e.Problem)
}

// MaxDelay is the longest delay_ms a rule may ask for: a day, as for
// FAULT_DELAY_MS, far beyond any demo and safe as a Duration.
const MaxDelay = 24 * time.Hour

var (
	topKeys  = []string{"version", "faults"}
	ruleKeys = []string{"delay_ms", "error_ratio", "error_code"}
	// A method's short name as in the proto.
	methodName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Parse checks a fault file given as bytes and returns service's rules;
// source names the file in errors. Other services' entries are checked for
// their shape only (a mapping of methods to mappings): their rules are
// theirs to judge.
func Parse(data []byte, source, service string) (*Rules, error) {
	root, err := document(data, source)
	if err != nil {
		return nil, err
	}
	c := checker{source: source}
	rules := c.file(root, service)
	if c.err != nil {
		return nil, c.err
	}
	return rules, nil
}

var yamlErrorLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document is the root node of the one document in data; nil when the file
// is empty.
func document(data []byte, source string) (*yaml.Node, error) {
	invalid := func(err error) error {
		message, line := err.Error(), 0
		if m := yamlErrorLine.FindStringSubmatch(message); m != nil {
			line, _ = strconv.Atoi(m[1])
			message = m[2]
		} else {
			message = strings.TrimPrefix(message, "yaml: ")
		}
		return &Error{source, line, "(document)", "not valid YAML: " + message}
	}
	decoder := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := decoder.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil
	} else if err != nil {
		return nil, invalid(err)
	}
	var next yaml.Node
	if err := decoder.Decode(&next); err == nil {
		return nil, &Error{source, next.Line, "(document)", "not valid YAML: but found another document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, invalid(err)
	}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return deref(doc.Content[0]), nil
	}
	return deref(&doc), nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// checker walks the document; the first failure is kept in err, and every
// method returns at once when it is set.
type checker struct {
	source string
	err    *Error
}

func (c *checker) fail(n *yaml.Node, key, format string, args ...any) {
	if c.err == nil {
		c.err = &Error{c.source, n.Line, key, fmt.Sprintf(format, args...)}
	}
}

func null(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func (c *checker) file(root *yaml.Node, service string) *Rules {
	rules := &Rules{methods: map[string]Rule{}}
	if null(root) {
		return rules
	}
	top := c.mapping(root, "(document)", topKeys)
	for _, e := range top {
		switch v := e.value; e.key {
		case "version":
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Value != "1" {
				c.fail(v, "version", "must be 1, got %s", describe(v))
			}
		case "faults":
			c.services(v, service, rules)
		}
	}
	if c.err != nil {
		return nil
	}
	return rules
}

// services reads `faults`, keeping service's rules in rules.
func (c *checker) services(n *yaml.Node, service string, rules *Rules) {
	if null(n) {
		return
	}
	for _, s := range c.entries(n, "faults") {
		key := "faults." + s.key
		if null(s.value) {
			continue
		}
		for _, m := range c.entries(s.value, key) {
			switch {
			case s.key != service:
				if !null(m.value) {
					c.entries(m.value, key+"."+m.key)
				}
			case m.key != Every && !methodName.MatchString(m.key):
				c.fail(m.node, key, "%q is not a method's short name (as ReserveStock) nor %q", m.key, Every)
			default:
				rules.methods[m.key] = c.rule(m.value, key+"."+m.key)
			}
		}
	}
}

// entry is one key and value of a mapping.
type entry struct {
	key   string
	node  *yaml.Node // the key's
	value *yaml.Node
}

// entries is a mapping's entries in document order; its keys are distinct,
// non-empty strings.
func (c *checker) entries(n *yaml.Node, key string) []entry {
	if c.err != nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		c.fail(n, key, "must be a mapping, got %s", describe(n))
		return nil
	}
	out := make([]entry, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" || k.Value == "" {
			c.fail(k, key, "keys must be non-empty strings, got %s", describe(k))
			return nil
		}
		if slices.ContainsFunc(out, func(e entry) bool { return e.key == k.Value }) {
			c.fail(k, key, "duplicate key %q", k.Value)
			return nil
		}
		out = append(out, entry{k.Value, k, deref(n.Content[i+1])})
	}
	return out
}

// mapping is entries whose keys must be among allowed.
func (c *checker) mapping(n *yaml.Node, key string, allowed []string) []entry {
	out := c.entries(n, key)
	for _, e := range out {
		if !slices.Contains(allowed, e.key) {
			c.fail(e.node, key, "unknown key %q; expected %s", e.key, strings.Join(allowed, ", "))
			return nil
		}
	}
	return out
}

func (c *checker) rule(n *yaml.Node, key string) Rule {
	rule := Rule{Code: codes.Unavailable}
	if null(n) {
		c.fail(n, key, "must set at least one of %s", strings.Join(ruleKeys, ", "))
		return rule
	}
	fields := c.mapping(n, key, ruleKeys)
	if c.err != nil {
		return rule
	}
	if len(fields) == 0 {
		c.fail(n, key, "must set at least one of %s", strings.Join(ruleKeys, ", "))
	}
	for _, f := range fields {
		v, field := f.value, key+"."+f.key
		switch f.key {
		case "delay_ms":
			ms, err := strconv.ParseInt(v.Value, 0, 64)
			switch {
			case v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || err != nil:
				c.fail(v, field, "must be an integer, got %s", describe(v))
			case ms < 0 || ms > MaxDelay.Milliseconds():
				c.fail(v, field, "must be 0 to %d, got %d", MaxDelay.Milliseconds(), ms)
			default:
				rule.Delay = time.Duration(ms) * time.Millisecond
			}
		case "error_ratio":
			tag := v.ShortTag()
			var ratio float64
			if err := v.Decode(&ratio); v.Kind != yaml.ScalarNode || (tag != "!!int" && tag != "!!float") || err != nil {
				c.fail(v, field, "must be a number, got %s", describe(v))
			} else if math.IsNaN(ratio) || ratio < 0 || ratio > 1 {
				c.fail(v, field, "must be 0 to 1, got %s", v.Value)
			} else {
				rule.ErrorRatio = ratio
			}
		case "error_code":
			code, known := statuscode.Parse(v.Value)
			switch {
			case v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" || !known:
				c.fail(v, field, "must be a gRPC status code name such as UNAVAILABLE, got %s", describe(v))
			case code == codes.OK:
				c.fail(v, field, "must be an error code, not OK")
			default:
				rule.Code = code
			}
		}
	}
	return rule
}

// describe is a node for an error message: its value and YAML type.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing"
		case "!!str":
			return strconv.Quote(n.Value)
		}
		return n.Value + " (" + strings.TrimPrefix(n.ShortTag(), "!!") + ")"
	}
	return "a YAML " + n.Tag
}
