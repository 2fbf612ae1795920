// Package promtest reads a /metrics page in Prometheus text format, for the
// tests that count what the server recorded.
package promtest

import (
	"bufio"
	"io"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Sample is one line of the page: a series and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples are a page's samples, in page order.
type Samples []Sample

// Text is GET http://addr/metrics, failing the test on anything but 200.
func Text(t testing.TB, addr string) string {
	t.Helper()
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	return string(body)
}

// Scrape is Parse(Text(t, addr)).
func Scrape(t testing.TB, addr string) Samples {
	t.Helper()
	samples, err := Parse(Text(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

var (
	line  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \S+)?$`)
	label = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?`)
)

// Parse reads the text format: comments skipped, label values unescaped.
func Parse(text string) (Samples, error) {
	var samples Samples
	scanner := bufio.NewScanner(strings.NewReader(text))
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		l := scanner.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		m := line.FindStringSubmatch(l)
		if m == nil {
			return nil, &strconv.NumError{Func: "promtest.Parse", Num: l, Err: strconv.ErrSyntax}
		}
		value, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, err
		}
		labels := map[string]string{}
		for _, pair := range label.FindAllStringSubmatch(m[2], -1) {
			labels[pair[1]] = strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n").Replace(pair[2])
		}
		samples = append(samples, Sample{Name: m[1], Labels: labels, Value: value})
	}
	return samples, scanner.Err()
}

// Sum adds up the values of the series called name whose labels include
// all of match (other labels, such as otel_scope_name, may be anything).
func (s Samples) Sum(name string, match map[string]string) float64 {
	total := 0.0
	for _, sample := range s {
		if sample.Name == name && subset(match, sample.Labels) {
			total += sample.Value
		}
	}
	return total
}

// Series are the label sets of the series called name.
func (s Samples) Series(name string) []map[string]string {
	var out []map[string]string
	for _, sample := range s {
		if sample.Name == name {
			out = append(out, maps.Clone(sample.Labels))
		}
	}
	return out
}

func subset(match, labels map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}
