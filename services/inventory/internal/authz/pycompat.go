package authz

// What makes this reader agree with mesh/policy.py to the letter: scalars
// typed by PyYAML's YAML 1.1 resolvers, and names quoted as Python's repr.

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// PyYAML's implicit resolvers (YAML 1.1), tried in its order.
var pyResolvers = []struct {
	tag     string
	pattern *regexp.Regexp
}{
	{"tag:yaml.org,2002:bool", regexp.MustCompile(
		`^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`)},
	{"tag:yaml.org,2002:float", regexp.MustCompile(
		`^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?` +
			`|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?` +
			`|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*` +
			`|[-+]?\.(?:inf|Inf|INF)` +
			`|\.(?:nan|NaN|NAN))$`)},
	{tagInt, regexp.MustCompile(
		`^(?:[-+]?0b[0-1_]+` +
			`|[-+]?0[0-7_]+` +
			`|[-+]?(?:0|[1-9][0-9_]*)` +
			`|[-+]?0x[0-9a-fA-F_]+` +
			`|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`)},
	{tagMerge, regexp.MustCompile(`^<<$`)},
	{"tag:yaml.org,2002:null", regexp.MustCompile(`^(?:~|null|Null|NULL|)$`)},
	{"tag:yaml.org,2002:timestamp", regexp.MustCompile(
		`^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]` +
			`|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?` +
			`(?:[Tt]|[ \t]+)[0-9][0-9]?` +
			`:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?` +
			`(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$`)},
	{"tag:yaml.org,2002:value", regexp.MustCompile(`^=$`)},
}

// pyTag is the tag PyYAML's composer gives n: an explicit tag as written,
// a quoted or block scalar a string, a plain one by PyYAML's resolvers.
func pyTag(n *yaml.Node) string {
	if n.Style&yaml.TaggedStyle != 0 {
		return n.LongTag()
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "tag:yaml.org,2002:map"
	case yaml.SequenceNode:
		return "tag:yaml.org,2002:seq"
	case yaml.ScalarNode:
	default:
		return n.LongTag()
	}
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return tagStr
	}
	for _, r := range pyResolvers {
		if r.pattern.MatchString(n.Value) {
			return r.tag
		}
	}
	return tagStr
}

// pyRepr quotes s as Python's repr does, so messages read as mesh.policy's.
func pyRepr(s string) string {
	quote := '\''
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		quote = '"'
	}
	var b strings.Builder
	b.WriteRune(quote)
	for _, r := range s {
		switch {
		case r == quote || r == '\\':
			b.WriteRune('\\')
			b.WriteRune(r)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x80 || unicode.IsPrint(r):
			b.WriteRune(r)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r < 0x10000:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
	}
	b.WriteRune(quote)
	return b.String()
}
