// Command decisions prints what package authz decides, for the test that
// holds it to mesh.policy (tests/contract/test_policy_agreement.py).
//
// It reads one JSON request on stdin,
//
//	{"policies": ["path", ...], "services": [...], "identities": [...], "methods": [...]}
//
// and writes one JSON answer on stdout: for each policy file, in order,
// either its load error or every (service, identity, method) it allows:
//
//	[{"error": {"line": 5, "key": "...", "problem": "...", "message": "..."}},
//	 {"allowed": [["catalog", "spiffe://shop.local/gateway", "/shop.catalog.v1.CatalogService/GetProduct"], ...]}]
//
// An identity of "" is a call without one.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/shopmesh/shopmesh/services/inventory/internal/authz"
)

type request struct {
	Policies   []string `json:"policies"`
	Services   []string `json:"services"`
	Identities []string `json:"identities"`
	Methods    []string `json:"methods"`
}

type loadError struct {
	Line    int    `json:"line"`
	Key     string `json:"key"`
	Problem string `json:"problem"`
	Message string `json:"message"`
}

type answer struct {
	Error   *loadError  `json:"error,omitempty"`
	Allowed [][3]string `json:"allowed"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "decisions:", err)
		os.Exit(1)
	}
}

func run() error {
	var req request
	decoder := json.NewDecoder(os.Stdin)
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&req); err != nil {
		return fmt.Errorf("bad request: %w", err)
	}
	answers := make([]answer, 0, len(req.Policies))
	for _, path := range req.Policies {
		policy, err := authz.Load(path)
		if err != nil {
			var policyErr *authz.Error
			if !errors.As(err, &policyErr) {
				return err
			}
			answers = append(answers, answer{Error: &loadError{
				policyErr.Line, policyErr.Key, policyErr.Problem, policyErr.Error(),
			}})
			continue
		}
		allowed := [][3]string{}
		for _, service := range req.Services {
			for _, identity := range req.Identities {
				for _, method := range req.Methods {
					if policy.Allows(service, identity, method) {
						allowed = append(allowed, [3]string{service, identity, method})
					}
				}
			}
		}
		answers = append(answers, answer{Allowed: allowed})
	}
	return json.NewEncoder(os.Stdout).Encode(answers)
}
