package promtest

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// PromQL words that are not metric names when not followed by "(".
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "inf": true, "nan": true,
	"start": true, "end": true, "atan2": true,
}

// Aggregation operators: they may be followed by by/without before "(".
var promqlAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true,
	"stddev": true, "stdvar": true, "count": true, "count_values": true,
	"bottomk": true, "topk": true, "quantile": true,
}

// Keywords followed by a parenthesised list of label names.
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true,
}

// MetricNames returns the metric names a PromQL expression selects, sorted
// and without duplicates. It is a lexer, not a parser: it skips strings,
// label matchers, ranges, numbers, durations, functions, aggregations,
// keywords and label lists, and reports what is left. A selector by
// __name__ is an error, as it cannot be checked.
func MetricNames(expr string) ([]string, error) {
	var names []string
	i := 0
	n := len(expr)
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(j int) int {
		for j < n && strings.IndexByte(" \t\r\n", expr[j]) >= 0 {
			j++
		}
		return j
	}
	skipString := func(j int) (int, error) { // expr[j] is the quote
		q := expr[j]
		for j++; j < n; j++ {
			switch {
			case expr[j] == '\\' && q != '`':
				j++
			case expr[j] == q:
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string in %q", expr)
	}
	skipUntil := func(j int, close byte) (int, error) { // skips to after close, strings aware
		for j < n {
			switch c := expr[j]; {
			case c == '"' || c == '\'' || c == '`':
				var err error
				if j, err = skipString(j); err != nil {
					return 0, err
				}
			case c == close:
				return j + 1, nil
			default:
				j++
			}
		}
		return 0, fmt.Errorf("missing %q in %q", close, expr)
	}
	for i < n {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			var err error
			if i, err = skipString(i); err != nil {
				return nil, err
			}
		case c == '{':
			end, err := skipUntil(i+1, '}')
			if err != nil {
				return nil, err
			}
			if strings.Contains(expr[i:end], "__name__") {
				return nil, fmt.Errorf("selector by __name__ in %q: cannot check its metric names", expr)
			}
			i = end
		case c == '[':
			end, err := skipUntil(i+1, ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c == '#':
			for i < n && expr[i] != '\n' {
				i++
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < n && expr[i+1] >= '0' && expr[i+1] <= '9':
			// numbers (1e3, 0x1f, .5) and durations (5m, 1h30m)
			for i < n && (isIdent(expr[i]) || expr[i] == '.' ||
				(expr[i] == '+' || expr[i] == '-') && (expr[i-1] == 'e' || expr[i-1] == 'E')) {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < n && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			lower := strings.ToLower(word)
			next := skipSpace(j)
			switch {
			case promqlLabelLists[lower]:
				if next < n && expr[next] == '(' {
					end, err := skipUntil(next+1, ')')
					if err != nil {
						return nil, err
					}
					j = end
				}
			case promqlAggregations[lower] && next < n && (expr[next] == '(' || strings.HasPrefix(expr[next:], "by") || strings.HasPrefix(expr[next:], "without")):
			case next < n && expr[next] == '(':
				// a function call
			case promqlKeywords[lower]:
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
			i = j
		default:
			i++
		}
	}
	slices.Sort(names)
	return names, nil
}

// RuleFile is the part of a Prometheus rules file that tests check.
type RuleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Record string            `yaml:"record"`
			Alert  string            `yaml:"alert"`
			Expr   string            `yaml:"expr"`
			For    string            `yaml:"for"`
			Labels map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// LoadRuleFile reads a Prometheus rules file.
func LoadRuleFile(path string) (*RuleFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f RuleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// Records returns the names the file's recording rules record, sorted and
// without duplicates.
func (f *RuleFile) Records() []string {
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" && !slices.Contains(out, r.Record) {
				out = append(out, r.Record)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Alerts returns the names of the file's alerting rules, sorted and without
// duplicates.
func (f *RuleFile) Alerts() []string {
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && !slices.Contains(out, r.Alert) {
				out = append(out, r.Alert)
			}
		}
	}
	slices.Sort(out)
	return out
}
