// Package authz is the inventory's reader of the mesh's authorization policy
// (mesh/policy.yaml) and the grpc-go interceptors that enforce it.
//
// It applies the rules of the reference reader, mesh/policy.py, to the same
// file: the same schema check, with errors worded alike
// (`<file>:<line>: <key>: <problem>`), and the same decision:
//
//   - A caller is the SPIFFE ID in its certificate,
//     spiffe://<trust_domain>/<name>, for one of the shop's six services.
//   - A method pattern is `package.Service/Method` or `package.Service/*`; a
//     target serves its own package only (`shop.<target>.v<N>`), plus server
//     reflection, which is closed unless listed.
//   - Health (grpc.health.v1.Health) is open to every caller, with or
//     without an identity; everything no rule names is denied.
//
// Scalars are typed as PyYAML types them (YAML 1.1: `yes` is a boolean,
// `1e3` a string), not as yaml.v3 does, so that a file one reader accepts the
// other accepts too.
package authz

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Version is the policy file version this reader knows.
const Version = 1

// HealthService is open to every caller and never listed in the policy.
const HealthService = "grpc.health.v1.Health"

// services are the shop's services, each one identity, in the order messages use.
var services = []string{"gateway", "catalog", "orders", "inventory", "payments", "notifications"}

// reflectionServices may be listed for any target (closed unless listed).
var reflectionServices = []string{
	"grpc.reflection.v1.ServerReflection",
	"grpc.reflection.v1alpha.ServerReflection",
}

// Services returns the shop's service names (a copy).
func Services() []string { return slices.Clone(services) }

// ReflectionServices returns the server reflection services (a copy).
func ReflectionServices() []string { return slices.Clone(reflectionServices) }

// IsService reports whether name is one of the shop's services.
func IsService(name string) bool { return slices.Contains(services, name) }

const ident = `[A-Za-z_][A-Za-z0-9_]*`

var (
	methodPattern = regexp.MustCompile(
		`^((` + ident + `(?:\.` + ident + `)*)\.` + ident + `)/(` + ident + `|\*)$`)
	methodName = regexp.MustCompile(`^` + ident + `$`)
	// SPIFFE: lower-case letters, digits, dots, dashes and underscores; no empty label.
	trustDomainPattern = regexp.MustCompile(`^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$`)
)

var topKeys = []string{"version", "trust_domain", "services"}
var ruleKeys = []string{"callers", "methods"}

// Error is an unreadable policy file or one that breaks the schema. Its
// message is `<source>:<line>: <key>: <problem>`, as mesh.policy's.
type Error struct {
	Source  string
	Line    int // 1-based; 0 when the file cannot be read or the line is unknown
	Key     string
	Problem string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", e.Source, e.Line, e.Key, e.Problem)
}

// Rule is one entry of `services.<service>`: these callers may call these methods.
type Rule struct {
	Service string
	Callers []string
	Methods []string // as written: `pkg.Service/Method` or `pkg.Service/*`
	Line    int
}

type pair struct{ service, caller string }

type grant struct {
	methods  map[string]bool // "/pkg.Service/Method"
	services map[string]bool // "pkg.Service", from "pkg.Service/*"
}

// Policy is a checked policy and the decision it makes for one call. It is
// immutable and safe for concurrent use.
type Policy struct {
	TrustDomain string
	Rules       []Rule
	Source      string
	grants      map[pair]grant
}

func newPolicy(trustDomain string, rules []Rule, source string) *Policy {
	p := &Policy{TrustDomain: trustDomain, Rules: rules, Source: source, grants: map[pair]grant{}}
	for _, rule := range rules {
		for _, caller := range rule.Callers {
			key := pair{rule.Service, caller}
			g, ok := p.grants[key]
			if !ok {
				g = grant{methods: map[string]bool{}, services: map[string]bool{}}
				p.grants[key] = g
			}
			for _, pattern := range rule.Methods {
				service, method, _ := strings.Cut(pattern, "/")
				if method == "*" {
					g.services[service] = true
				} else {
					g.methods["/"+pattern] = true
				}
			}
		}
	}
	return p
}

// Identity is the SPIFFE ID of service in this trust domain.
func (p *Policy) Identity(service string) string {
	return "spiffe://" + p.TrustDomain + "/" + service
}

// CallerName is the service identity names, and false when it is none of
// the shop's services in this trust domain (empty, foreign, malformed).
func (p *Policy) CallerName(identity string) (string, bool) {
	name, ok := strings.CutPrefix(identity, "spiffe://"+p.TrustDomain+"/")
	if !ok || !IsService(name) {
		return "", false
	}
	return name, true
}

// Allows reports whether identity (a SPIFFE ID, "" without one) may call
// fullMethod (`/pkg.Service/Method`, as grpc.UnaryServerInfo.FullMethod) on
// service. A service that is not one of the shop's is denied everything but
// health (mesh.policy raises ValueError there; the interceptors refuse it
// when they are built).
func (p *Policy) Allows(service, identity, fullMethod string) bool {
	if strings.HasPrefix(fullMethod, "/"+HealthService+"/") {
		return true
	}
	caller, ok := p.CallerName(identity)
	if !ok || !IsService(service) {
		return false
	}
	g, ok := p.grants[pair{service, caller}]
	if !ok {
		return false
	}
	if g.methods[fullMethod] {
		return true
	}
	rest, slash := strings.CutPrefix(fullMethod, "/")
	cut := strings.LastIndex(rest, "/")
	if !slash || cut < 0 {
		return false
	}
	return methodName.MatchString(rest[cut+1:]) && g.services[rest[:cut]]
}

// CallersOf is the services that may call some method of service (health
// aside), in the shop's order.
func (p *Policy) CallersOf(service string) []string {
	var callers []string
	for _, name := range services {
		if _, ok := p.grants[pair{service, name}]; ok {
			callers = append(callers, name)
		}
	}
	return callers
}

// MethodsFor is the method patterns caller may call on service, as written,
// in file order.
func (p *Policy) MethodsFor(service, caller string) []string {
	var methods []string
	for _, rule := range p.Rules {
		if rule.Service == service && slices.Contains(rule.Callers, caller) {
			methods = append(methods, rule.Methods...)
		}
	}
	return methods
}
