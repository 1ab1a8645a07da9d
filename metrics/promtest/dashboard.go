package promtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Dashboard is the part of a Grafana dashboard JSON model that tests check.
type Dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	UID           string     `json:"uid"`
	Title         string     `json:"title"`
	SchemaVersion int        `json:"schemaVersion"`
	Panels        []Panel    `json:"panels"`
	Templating    Templating `json:"templating"`

	Path string `json:"-"`
}

// Templating holds the dashboard's template variables, in order.
type Templating struct {
	List []Variable `json:"list"`
}

// Panel is a dashboard panel; a row holds its collapsed panels in Panels.
type Panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *DatasourceRef `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []PanelTarget `json:"targets"`
	Panels  []Panel       `json:"panels"`
}

// PanelTarget is one query of a panel.
type PanelTarget struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Instant      bool           `json:"instant"`
	Format       string         `json:"format"`
	Datasource   *DatasourceRef `json:"datasource"`
}

// DatasourceRef points at a data source, e.g. {"type": "prometheus", "uid": "${datasource}"}.
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is a template variable.
type Variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"` // query, custom, constant, datasource
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Datasource *DatasourceRef  `json:"datasource"`
	Current    struct {
		Value json.RawMessage `json:"value"`
	} `json:"current"`
}

// All is the value that selects a variable's "All" option.
const All = "$__all"

// LoadDashboard reads a dashboard JSON model.
func LoadDashboard(path string) (*Dashboard, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d.Path = path
	return &d, nil
}

// AllPanels returns the panels, those inside collapsed rows included.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// QueryString returns the variable's query: a string, or the "query" field
// of Grafana's newer object form.
func (v *Variable) QueryString() (string, error) {
	if len(v.Query) == 0 {
		return v.Definition, nil
	}
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var obj struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &obj); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object: %w", v.Name, err)
	}
	return obj.Query, nil
}

// Default returns the variable's saved current value(s); [All] for "All".
func (v *Variable) Default() ([]string, error) {
	if len(v.Current.Value) == 0 {
		return nil, fmt.Errorf("variable %s has no current value", v.Name)
	}
	var s string
	if err := json.Unmarshal(v.Current.Value, &s); err == nil {
		return []string{s}, nil
	}
	var list []string
	if err := json.Unmarshal(v.Current.Value, &list); err != nil {
		return nil, fmt.Errorf("variable %s: current value: %w", v.Name, err)
	}
	return list, nil
}

// CustomOptions returns a custom variable's options ("a,b" or "text : value").
func (v *Variable) CustomOptions() ([]string, error) {
	q, err := v.QueryString()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, part := range strings.Split(q, ",") {
		part = strings.TrimSpace(part)
		if _, value, ok := strings.Cut(part, " : "); ok {
			part = strings.TrimSpace(value)
		}
		if part != "" {
			out = append(out, part)
		}
	}
	return out, nil
}

// Vars are resolved template variables, ready to interpolate.
type Vars struct {
	vars     map[string]resolved
	builtins map[string]string
}

type resolved struct {
	v      Variable
	values []string // selected values; for "All" without allValue: every option
	all    bool
}

// Selected returns the values a variable stands for (every option for "All").
func (vs *Vars) Selected(name string) []string { return vs.vars[name].values }

var labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(?:(.*?)\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// ParseLabelValues splits a query variable's label_values(selector, label)
// (or label_values(label)) query.
func ParseLabelValues(q string) (selector, label string, ok bool) {
	m := labelValuesRE.FindStringSubmatch(q)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// Resolve resolves the dashboard's variables in order, as Grafana would when
// the dashboard is opened at time at: a variable takes its value from
// overrides (All selects "All") or else from its saved current value; the
// options of query variables (label_values(selector, label)) come from s
// over the hour before at, after earlier variables are substituted in the
// selector. A data source variable (of Prometheus data sources) stands for
// s itself: it has no value in queries, and Interpolate refuses it. builtins
// are Grafana's global variables ("__rate_interval": "5m", …) for
// Interpolate.
func (d *Dashboard) Resolve(ctx context.Context, s *Server, at time.Time, overrides map[string][]string, builtins map[string]string) (*Vars, error) {
	vs := &Vars{vars: map[string]resolved{}, builtins: builtins}
	for name := range overrides {
		if !slices.ContainsFunc(d.Templating.List, func(v Variable) bool { return v.Name == name }) {
			return nil, fmt.Errorf("%s: no variable %q to override", d.Path, name)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			if q, err := v.QueryString(); err != nil || q != "prometheus" {
				return nil, fmt.Errorf("variable %s: a data source variable of %q, want prometheus", v.Name, q)
			}
			if _, ok := overrides[v.Name]; ok {
				return nil, fmt.Errorf("variable %s: a data source variable cannot be overridden: its data source is the Prometheus under test", v.Name)
			}
			continue
		}
		var options []string
		switch v.Type {
		case "query":
			q, err := v.QueryString()
			if err != nil {
				return nil, err
			}
			sel, label, ok := ParseLabelValues(q)
			if !ok {
				return nil, fmt.Errorf("variable %s: unsupported query %q (want label_values(selector, label))", v.Name, q)
			}
			selector, err := vs.Interpolate(sel)
			if err != nil {
				return nil, fmt.Errorf("variable %s: %w", v.Name, err)
			}
			options, err = s.LabelValues(ctx, label, selector, at.Add(-time.Hour), at)
			if err != nil {
				return nil, fmt.Errorf("variable %s: %w", v.Name, err)
			}
		case "custom":
			var err error
			if options, err = v.CustomOptions(); err != nil {
				return nil, err
			}
		case "constant":
			q, err := v.QueryString()
			if err != nil {
				return nil, err
			}
			options = []string{q}
		default:
			return nil, fmt.Errorf("variable %s: type %q not supported", v.Name, v.Type)
		}
		selected, ok := overrides[v.Name]
		if !ok {
			var err error
			if selected, err = v.Default(); err != nil {
				return nil, err
			}
		}
		r := resolved{v: v}
		if slices.Contains(selected, All) {
			if !v.IncludeAll {
				return nil, fmt.Errorf("variable %s: All selected but includeAll is false", v.Name)
			}
			r.all = true
			r.values = options
		} else {
			if len(selected) > 1 && !v.Multi {
				return nil, fmt.Errorf("variable %s: %d values selected but multi is false", v.Name, len(selected))
			}
			for _, val := range selected {
				if !slices.Contains(options, val) {
					return nil, fmt.Errorf("variable %s: %q is not one of its options %q", v.Name, val, options)
				}
			}
			r.values = selected
		}
		vs.vars[v.Name] = r
	}
	return vs, nil
}

var varRE = regexp.MustCompile(`\$\{([a-zA-Z0-9_]+)(:[^}]*)?\}|\[\[([a-zA-Z0-9_]+)\]\]|\$([a-zA-Z0-9_]+)`)

// Interpolate substitutes template and global variables in a Prometheus
// query the way Grafana's Prometheus data source does: a variable that is
// neither multi-value nor has "All" gives its value as is; otherwise values
// are regex-escaped and several are joined as (a|b); "All" with an allValue
// gives the allValue unescaped. An unknown variable or a ${var:format} is an
// error.
func (vs *Vars) Interpolate(expr string) (string, error) {
	var failed error
	out := varRE.ReplaceAllStringFunc(expr, func(m string) string {
		sub := varRE.FindStringSubmatch(m)
		name := sub[1] + sub[3] + sub[4]
		if sub[2] != "" {
			failed = fmt.Errorf("%s: variable formats are not supported", m)
			return m
		}
		if v, ok := vs.builtins[name]; ok {
			return v
		}
		r, ok := vs.vars[name]
		if !ok {
			failed = fmt.Errorf("unknown variable %s in %q", m, expr)
			return m
		}
		return r.format()
	})
	return out, failed
}

func (r resolved) format() string {
	if r.all && r.v.AllValue != "" {
		return r.v.AllValue
	}
	if !r.v.Multi && !r.v.IncludeAll {
		if len(r.values) == 0 {
			return ""
		}
		return regularEscape(r.values[0])
	}
	esc := make([]string, len(r.values))
	for i, v := range r.values {
		esc[i] = regexEscape(v)
	}
	if len(esc) == 1 {
		return esc[0]
	}
	return "(" + strings.Join(esc, "|") + ")"
}

// regularEscape is Grafana's prometheusRegularEscape.
func regularEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	return strings.ReplaceAll(s, `'`, `\\'`)
}

// regexEscape is Grafana's prometheusSpecialRegexEscape: regex
// metacharacters escaped for a regex inside a PromQL string literal.
func regexEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c == '\\':
			b.WriteString(`\\\\`)
		case strings.ContainsRune(`$^*{}[]'+?.()|`, c):
			b.WriteString(`\\`)
			b.WriteRune(c)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// Query is one panel query of a dashboard, interpolated.
type Query struct {
	Panel Panel
	RefID string
	Raw   string // as in the dashboard
	Expr  string // variables substituted
}

// Key names the query in messages and expectation tables: "panel title/refId".
func (q Query) Key() string { return q.Panel.Title + "/" + q.RefID }

// Queries returns every panel query of the dashboard with vs substituted.
func (d *Dashboard) Queries(vs *Vars) ([]Query, error) {
	var out []Query
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			expr, err := vs.Interpolate(t.Expr)
			if err != nil {
				return nil, fmt.Errorf("%s: panel %q target %s: %w", d.Path, p.Title, t.RefID, err)
			}
			out = append(out, Query{Panel: p, RefID: t.RefID, Raw: t.Expr, Expr: expr})
		}
	}
	return out, nil
}

// Result is a query of a dashboard evaluated by Prometheus.
type Result struct {
	Query
	Samples []Sample
	Err     error
}

// Evaluate runs every panel query of the dashboard, with vs substituted, as
// an instant query at time at. Query errors are in each Result.
func (d *Dashboard) Evaluate(ctx context.Context, s *Server, vs *Vars, at time.Time) ([]Result, error) {
	qs, err := d.Queries(vs)
	if err != nil {
		return nil, err
	}
	out := make([]Result, len(qs))
	for i, q := range qs {
		out[i].Query = q
		out[i].Samples, out[i].Err = s.Query(ctx, q.Expr, at)
	}
	return out, nil
}
