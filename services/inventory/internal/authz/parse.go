package authz

// The reader of the policy file: YAML parsing and the schema check, which
// builds a Policy or fails with an *Error naming the line and key.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Load reads and checks the policy file at path; the error is an *Error
// naming the line and key of the first problem.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		problem := err.Error()
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			// As C's strerror words it, and so Python: "No such file or directory".
			problem = pathErr.Err.Error()
			if first, size := utf8.DecodeRuneInString(problem); size > 0 {
				problem = string(unicode.ToUpper(first)) + problem[size:]
			}
		}
		return nil, &Error{path, 0, "(file)", "cannot read: " + problem}
	}
	if !utf8.Valid(data) {
		return nil, &Error{path, 0, "(file)", "cannot read: not UTF-8"}
	}
	return Parse(data, path)
}

// Parse checks a policy document given as bytes; source names it in errors.
func Parse(data []byte, source string) (*Policy, error) {
	root, err := compose(data, source)
	if err != nil {
		return nil, err
	}
	c := checker{source: source}
	policy := c.policy(root)
	if c.err != nil {
		return nil, c.err
	}
	return policy, nil
}

var yamlErrorLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// compose parses the one document in data into its root node (nodes, not
// values: they keep each value's line and a duplicate key).
func compose(data []byte, source string) (*yaml.Node, error) {
	invalid := func(err error) error {
		message := err.Error()
		line := 0
		if m := yamlErrorLine.FindStringSubmatch(message); m != nil {
			line, _ = strconv.Atoi(m[1])
			message = m[2]
		} else {
			message = strings.TrimPrefix(message, "yaml: ")
		}
		return &Error{source, line, "(document)", "not valid YAML: " + message}
	}
	decoder := yaml.NewDecoder(bytes.NewReader(data))
	var document yaml.Node
	if err := decoder.Decode(&document); errors.Is(err, io.EOF) {
		return nil, &Error{source, 1, "(document)", "empty; expected version, trust_domain, services"}
	} else if err != nil {
		return nil, invalid(err)
	}
	var next yaml.Node
	if err := decoder.Decode(&next); err == nil {
		return nil, &Error{source, next.Line, "(document)",
			"not valid YAML: but found another document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, invalid(err)
	}
	if document.Kind == yaml.DocumentNode && len(document.Content) == 1 {
		return deref(document.Content[0]), nil
	}
	return deref(&document), nil
}

// deref follows aliases: PyYAML's composer gives the anchored node itself.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// checker walks the document; the first failure is kept in err and ends
// the walk (every method returns at once when err is set).
type checker struct {
	source string
	err    *Error
}

func (c *checker) fail(n *yaml.Node, key, problem string) {
	if c.err == nil {
		c.err = &Error{c.source, n.Line, key, problem}
	}
}

func (c *checker) policy(root *yaml.Node) *Policy {
	top := c.mapping(root, "(document)", topKeys)
	if c.err != nil {
		return nil
	}
	c.version(top["version"])
	trustDomain := c.text(top["trust_domain"], "trust_domain")
	if c.err != nil {
		return nil
	}
	if !trustDomainPattern.MatchString(trustDomain) {
		c.fail(top["trust_domain"], "trust_domain", pyRepr(trustDomain)+
			" is not a SPIFFE trust domain (a lower-case name such as shop.local, without spiffe:// or a path)")
		return nil
	}
	var rules []Rule
	c.entries(top["services"], "services", false, func(service string, keyNode, value *yaml.Node) {
		if !IsService(service) {
			c.fail(keyNode, "services."+service, unknown(service, "service"))
			return
		}
		rules = append(rules, c.rules(service, value, "services."+service)...)
	})
	if c.err != nil {
		return nil
	}
	return newPolicy(trustDomain, rules, c.source)
}

func (c *checker) version(n *yaml.Node) {
	if c.err != nil {
		return
	}
	if n.Kind != yaml.ScalarNode || pyTag(n) != tagInt {
		c.fail(n, "version", fmt.Sprintf("must be the integer %d, got %s", Version, kind(n)))
		return
	}
	if strings.TrimSpace(n.Value) != strconv.Itoa(Version) {
		c.fail(n, "version", fmt.Sprintf("unsupported version %s (this reader knows %d)", n.Value, Version))
	}
}

func (c *checker) rules(service string, n *yaml.Node, key string) []Rule {
	type grantKey struct{ caller, pattern string }
	granted := map[grantKey]int{} // -> line of the grant
	var rules []Rule
	for index, item := range c.items(n, key) {
		where := fmt.Sprintf("%s[%d]", key, index)
		fields := c.mapping(item, where, ruleKeys)
		if c.err != nil {
			return nil
		}
		callers := c.names(fields["callers"], where+".callers", "caller")
		methods, methodNodes := c.methods(fields["methods"], where+".methods", service)
		if c.err != nil {
			return nil
		}
		for _, caller := range callers {
			for i, pattern := range methods {
				if earlier, ok := granted[grantKey{caller, pattern}]; ok {
					c.fail(methodNodes[i], where+".methods",
						fmt.Sprintf("%s is already granted %s at line %d", caller, pattern, earlier))
					return nil
				}
				granted[grantKey{caller, pattern}] = methodNodes[i].Line
			}
		}
		rules = append(rules, Rule{Service: service, Callers: callers, Methods: methods, Line: item.Line})
	}
	return rules
}

func (c *checker) names(n *yaml.Node, key, what string) []string {
	var names []string
	for index, item := range c.items(n, key) {
		where := fmt.Sprintf("%s[%d]", key, index)
		name := c.text(item, where)
		switch {
		case c.err != nil:
		case !IsService(name):
			c.fail(item, where, unknown(name, what))
		case slices.Contains(names, name):
			c.fail(item, where, name+" is listed twice")
		}
		if c.err != nil {
			return nil
		}
		names = append(names, name)
	}
	return names
}

var targetPackage = map[string]*regexp.Regexp{}

func init() {
	for _, service := range services {
		targetPackage[service] = regexp.MustCompile(`^shop\.` + regexp.QuoteMeta(service) + `\.v[0-9]+$`)
	}
}

func (c *checker) methods(n *yaml.Node, key, service string) ([]string, []*yaml.Node) {
	var patterns []string
	var nodes []*yaml.Node
	for index, item := range c.items(n, key) {
		where := fmt.Sprintf("%s[%d]", key, index)
		pattern := c.text(item, where)
		if c.err != nil {
			return nil, nil
		}
		match := methodPattern.FindStringSubmatch(pattern)
		switch {
		case match == nil:
			c.fail(item, where, pyRepr(pattern)+" is not package.Service/Method or package.Service/*")
		case match[1] == HealthService:
			c.fail(item, where, "health is open to every caller; do not list it")
		case !slices.Contains(reflectionServices, match[1]) && !targetPackage[service].MatchString(match[2]):
			c.fail(item, where, fmt.Sprintf("%s does not serve %s (only shop.%s.v<N> services and %s)",
				service, match[1], service, strings.Join(reflectionServices, " or ")))
		case slices.Contains(patterns, pattern):
			c.fail(item, where, pattern+" is listed twice")
		}
		if c.err != nil {
			return nil, nil
		}
		patterns = append(patterns, pattern)
		nodes = append(nodes, item)
	}
	return patterns, nodes
}

// mapping is a mapping with exactly the keys allowed.
func (c *checker) mapping(n *yaml.Node, key string, allowed []string) map[string]*yaml.Node {
	fields := map[string]*yaml.Node{}
	c.entries(n, key, true, func(name string, keyNode, value *yaml.Node) {
		if !slices.Contains(allowed, name) {
			c.fail(keyNode, child(key, name), "unknown key; expected "+strings.Join(allowed, ", "))
			return
		}
		fields[name] = value
	})
	if c.err != nil {
		return nil
	}
	var missing []string
	for _, name := range allowed {
		if _, ok := fields[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		c.fail(n, key, "missing key(s) "+strings.Join(missing, ", "))
		return nil
	}
	return fields
}

// entries calls each with every key and value of the mapping n, in order,
// until the first failure.
func (c *checker) entries(n *yaml.Node, key string, allowEmpty bool,
	each func(name string, keyNode, value *yaml.Node)) {
	if c.err != nil {
		return
	}
	if n.Kind != yaml.MappingNode {
		c.fail(n, key, "must be a mapping, got "+kind(n))
		return
	}
	if len(n.Content) == 0 && !allowEmpty {
		c.fail(n, key, "must not be empty")
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		keyNode, value := deref(n.Content[i]), deref(n.Content[i+1])
		if keyNode.Kind == yaml.ScalarNode && pyTag(keyNode) == tagMerge {
			// yaml.v3 would merge `<<`, PyYAML's composer would not: allow neither.
			c.fail(keyNode, child(key, "<<"), "merge keys are not allowed")
			return
		}
		name := c.text(keyNode, key+" (a key)")
		if c.err != nil {
			return
		}
		if seen[name] {
			c.fail(keyNode, child(key, name), "duplicate key")
			return
		}
		seen[name] = true
		each(name, keyNode, value)
		if c.err != nil {
			return
		}
	}
}

func (c *checker) items(n *yaml.Node, key string) []*yaml.Node {
	if c.err != nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		c.fail(n, key, "must be a list, got "+kind(n))
		return nil
	}
	if len(n.Content) == 0 {
		c.fail(n, key, "must not be an empty list")
		return nil
	}
	items := make([]*yaml.Node, len(n.Content))
	for i, item := range n.Content {
		items[i] = deref(item)
	}
	return items
}

func (c *checker) text(n *yaml.Node, key string) string {
	if c.err != nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode || pyTag(n) != tagStr || strings.TrimSpace(n.Value) == "" {
		c.fail(n, key, "must be a non-empty string, got "+kind(n))
		return ""
	}
	return n.Value
}

func unknown(name, what string) string {
	return fmt.Sprintf("unknown %s %s; expected one of %s", what, pyRepr(name), strings.Join(services, ", "))
}

func child(key, name string) string {
	if key == "(document)" {
		return name
	}
	return key + "." + name
}

const (
	tagStr   = "tag:yaml.org,2002:str"
	tagInt   = "tag:yaml.org,2002:int"
	tagMerge = "tag:yaml.org,2002:merge"
)

var kinds = map[string]string{
	tagStr:                    "a string",
	tagInt:                    "an integer",
	"tag:yaml.org,2002:float": "a number",
	"tag:yaml.org,2002:bool":  "a boolean",
	"tag:yaml.org,2002:null":  "null",
}

func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	tag := pyTag(n)
	if n.Kind == yaml.ScalarNode && tag == tagStr && strings.TrimSpace(n.Value) == "" {
		return "an empty string"
	}
	if name, ok := kinds[tag]; ok {
		return name
	}
	return "a " + tag + " value"
}
