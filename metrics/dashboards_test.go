package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics/promtest"
)

// Every panel, target and query variable reads from the dashboard's data
// source variable, not from a ${DS_…} __inputs placeholder: Grafana
// substitutes those only on Import (UI or /api/dashboards/import), while a
// dashboard provisioned from a file, a ConfigMap or /api/dashboards/db
// keeps the literal, and every panel fails ("Datasource ${DS_PROMETHEUS}
// was not found"). The variable works both ways and lets users pick
// another Prometheus.
const (
	dsVar = "datasource"
	dsUID = "${" + dsVar + "}"
)

// checkDatasourceRefs walks the whole dashboard model and reports every
// "datasource" that is not {"type": "prometheus", "uid": "${datasource}"},
// except the built-in annotation's Grafana data source, and every string
// that still refers to a ${DS_…} input.
func checkDatasourceRefs(t *testing.T, model map[string]any) {
	t.Helper()
	builtIn := map[string]any{"type": "grafana", "uid": "-- Grafana --"}
	want := map[string]any{"type": "prometheus", "uid": dsUID}
	var walk func(path string, x any)
	walk = func(path string, x any) {
		t.Helper()
		switch x := x.(type) {
		case map[string]any:
			for k, v := range x {
				p := path + "." + k
				if k == "datasource" {
					ok := fmt.Sprint(v) == fmt.Sprint(want) ||
						strings.HasPrefix(path, ".annotations.list[") && x["builtIn"] == 1.0 && fmt.Sprint(v) == fmt.Sprint(builtIn)
					if !ok {
						t.Errorf("%s = %v, want %v", p, v, want)
					}
					continue
				}
				walk(p, v)
			}
		case []any:
			for i, v := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), v)
			}
		case string:
			if strings.Contains(x, "${DS_") {
				t.Errorf("%s = %q refers to an __inputs placeholder, which only Import substitutes", path, x)
			}
		}
	}
	walk("", model)
}

// checkDatasourceVariable checks the dashboard's first variable: the data
// source variable every panel uses, offering Grafana's Prometheus data
// sources, one at a time, with no saved choice (a data source uid from
// the author's Grafana exists nowhere else: Grafana picks the default).
func checkDatasourceVariable(t *testing.T, d *promtest.Dashboard) {
	t.Helper()
	if len(d.Templating.List) == 0 || d.Templating.List[0].Name != dsVar {
		t.Errorf("the first variable is not %q", dsVar)
	}
	n := 0
	for _, v := range d.Templating.List {
		if v.Type != "datasource" && v.Name != dsVar {
			continue
		}
		n++
		q, err := v.QueryString()
		if v.Name != dsVar || v.Type != "datasource" || err != nil || q != "prometheus" {
			t.Errorf("variable %s: type %q, query %q, want variable %s of type datasource, query prometheus", v.Name, v.Type, q, dsVar)
		}
		if v.Multi || v.IncludeAll {
			t.Errorf("variable %s: multi %v, includeAll %v: panels read from one data source", v.Name, v.Multi, v.IncludeAll)
		}
		if len(v.Current.Value) != 0 {
			t.Errorf("variable %s: current value %s, want none (Grafana then picks its default Prometheus)", v.Name, v.Current.Value)
		}
	}
	if n != 1 {
		t.Errorf("%d data source variables, want one: %s", n, dsVar)
	}
}

// knownNames returns the metric names a dashboard may use: every family
// the registry exposes (histograms with their _bucket, _sum and _count
// series) and every name the recording rules record.
func knownNames(t *testing.T) map[string]bool {
	t.Helper()
	m, happen := newScenarioMetrics(scenario(time.Now()), time.Now())
	happen()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range families {
		known[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				known[f.GetName()+suffix] = true
			}
		}
	}
	rules, err := promtest.LoadRuleFile("rules/lastmile.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules.Records() {
		known[r] = true
	}
	return known
}

func loadDashboards(t *testing.T) map[string]*promtest.Dashboard {
	t.Helper()
	out := map[string]*promtest.Dashboard{}
	for _, path := range glob(t, "dashboards/*.json") {
		d, err := promtest.LoadDashboard(path)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(path), ".json")] = d
	}
	for _, want := range []string{"delivery", "operations"} {
		if out[want] == nil {
			t.Fatalf("dashboards/%s.json is missing", want)
		}
	}
	return out
}

// Every value a variable can take, for checking every interpolation.
func variableChoices(v *promtest.Variable) ([][]string, error) {
	switch v.Type {
	case "custom":
		opts, err := v.CustomOptions()
		if err != nil {
			return nil, err
		}
		var out [][]string
		for _, o := range opts {
			out = append(out, []string{o})
		}
		if v.IncludeAll {
			out = append(out, []string{promtest.All})
		}
		return out, nil
	default: // query: values unknown without a server
		return [][]string{{"x"}}, nil
	}
}

func TestDashboardsAreValidGrafanaModels(t *testing.T) {
	known := knownNames(t)
	uids := map[string]string{}
	for name, d := range loadDashboards(t) {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(d.Path)
			if err != nil {
				t.Fatal(err)
			}
			var generic map[string]any
			if err := json.Unmarshal(raw, &generic); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{"title", "uid", "panels", "templating", "schemaVersion", "time", "__inputs", "__requires"} {
				if _, ok := generic[key]; !ok {
					t.Errorf("no %q", key)
				}
			}
			if id, ok := generic["id"]; !ok || id != nil {
				t.Errorf(`"id" = %v, want null (importable into any Grafana)`, id)
			}
			if d.UID == "" || len(d.UID) > 40 || strings.ContainsAny(d.UID, " /") {
				t.Errorf("uid %q: want 1 to 40 characters, no spaces or slashes", d.UID)
			}
			if other, dup := uids[d.UID]; dup {
				t.Errorf("uid %q also used by %s", d.UID, other)
			}
			uids[d.UID] = name
			if d.Title == "" || d.SchemaVersion < 36 {
				t.Errorf("title %q, schemaVersion %d", d.Title, d.SchemaVersion)
			}
			// Import needs no input: the data source variable takes Grafana's
			// default Prometheus, so Import and provisioning load the same
			// dashboard.
			if len(d.Inputs) != 0 {
				t.Errorf("__inputs = %+v, want none (the %s variable chooses the data source)", d.Inputs, dsVar)
			}
			// The links between lastmile's dashboards carry the variables:
			// a data source chosen in one stays chosen in the other (a
			// variable the other lacks is ignored).
			links, _ := generic["links"].([]any)
			if len(links) == 0 {
				t.Error("no links to the other lastmile dashboards")
			}
			for _, l := range links {
				if link, _ := l.(map[string]any); link["includeVars"] != true || link["keepTime"] != true {
					t.Errorf("link %v: want includeVars and keepTime, the data source and time range carried over", l)
				}
			}
			checkDatasourceRefs(t, generic)
			checkDatasourceVariable(t, d)
			checkDatasource := func(where string, ds *promtest.DatasourceRef) {
				if ds == nil || ds.Type != "prometheus" || ds.UID != dsUID {
					t.Errorf("%s: datasource %+v, want {prometheus %s}", where, ds, dsUID)
				}
			}

			// Variables: every choice of every variable must give queries
			// that use known metric names only.
			choices := map[string][][]string{}
			for i := range d.Templating.List {
				v := &d.Templating.List[i]
				if v.Type == "datasource" {
					continue // not in PromQL: expansions reports a $datasource there
				}
				if v.Type == "query" {
					checkDatasource("variable "+v.Name, v.Datasource)
					q, err := v.QueryString()
					if err != nil {
						t.Fatal(err)
					}
					sel, _, ok := promtest.ParseLabelValues(q)
					if !ok || sel == "" {
						t.Errorf("variable %s: query %q, want label_values(selector, label)", v.Name, q)
					}
					for _, expr := range expansions(t, sel, d, choices) {
						checkNames(t, "variable "+v.Name, expr, known)
					}
				}
				if _, err := v.Default(); err != nil {
					t.Error(err)
				}
				if choices[v.Name], err = variableChoices(v); err != nil {
					t.Fatal(err)
				}
			}

			ids := map[int]string{}
			panels := d.AllPanels()
			if len(panels) == 0 {
				t.Fatal("no panels")
			}
			for _, p := range panels {
				where := "panel " + p.Title
				if p.ID <= 0 {
					t.Errorf("%s: id %d", where, p.ID)
				}
				if other, dup := ids[p.ID]; dup {
					t.Errorf("%s: id %d also used by panel %s", where, p.ID, other)
				}
				ids[p.ID] = p.Title
				if p.Title == "" || p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
					t.Errorf("panel %d: title %q, gridPos %+v", p.ID, p.Title, p.GridPos)
				}
				if p.Type == "row" {
					if p.Datasource != nil {
						checkDatasource(where, p.Datasource)
					}
					continue
				}
				checkDatasource(where, p.Datasource)
				if len(p.Targets) == 0 {
					t.Errorf("%s: no targets", where)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					if tg.RefID == "" || refs[tg.RefID] {
						t.Errorf("%s: missing or duplicate refId %q", where, tg.RefID)
					}
					refs[tg.RefID] = true
					checkDatasource(where+"/"+tg.RefID, tg.Datasource)
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s/%s: no expr", where, tg.RefID)
						continue
					}
					for _, expr := range expansions(t, tg.Expr, d, choices) {
						checkNames(t, where+"/"+tg.RefID, expr, known)
					}
				}
			}
		})
	}
}

// expansions returns expr with every combination of the variables it uses
// substituted (query variables by a placeholder value).
func expansions(t *testing.T, expr string, d *promtest.Dashboard, choices map[string][][]string) []string {
	t.Helper()
	exprs := []string{expr}
	for _, v := range d.Templating.List {
		if _, ok := choices[v.Name]; !ok {
			continue // the data source variable: left for the check below
		}
		if !strings.Contains(expr, "$"+v.Name) && !strings.Contains(expr, "${"+v.Name) {
			continue
		}
		var next []string
		for _, e := range exprs {
			for _, c := range choices[v.Name] {
				val := strings.Join(c, "|")
				if c[0] == promtest.All {
					val = ".*"
				}
				r := strings.NewReplacer("${"+v.Name+"}", val, "$"+v.Name, val)
				next = append(next, r.Replace(e))
			}
		}
		exprs = next
	}
	for i, e := range exprs {
		exprs[i] = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1d").Replace(e)
		if strings.Contains(exprs[i], "$") {
			t.Errorf("unknown variable left in %q", exprs[i])
		}
	}
	return exprs
}

func checkNames(t *testing.T, where, expr string, known map[string]bool) {
	t.Helper()
	names, err := promtest.MetricNames(expr)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	if len(names) == 0 {
		t.Errorf("%s: %q uses no metric", where, expr)
	}
	for _, n := range names {
		if !known[n] {
			t.Errorf("%s: %s is neither exposed by lastmile nor recorded by rules/lastmile.rules.yml (in %q)", where, n, expr)
		}
	}
}

// The delivery dashboard's environment variable defaults to the production
// environments: All of the environments that lastmile_environment_info
// marks production, through the production variable.
func TestDeliveryDashboardDefaultsToProduction(t *testing.T) {
	d := loadDashboards(t)["delivery"]
	byName := map[string]*promtest.Variable{}
	var order []string
	for i := range d.Templating.List {
		v := &d.Templating.List[i]
		byName[v.Name] = v
		order = append(order, v.Name)
	}
	if !slices.Equal(order, []string{dsVar, "repository", "production", "environment", "window"}) {
		t.Fatalf("variables %q", order)
	}
	for _, name := range []string{"repository", "environment"} {
		v := byName[name]
		if v.Type != "query" || !v.Multi || !v.IncludeAll {
			t.Errorf("%s: type %s multi %v includeAll %v, want a multi-value query variable with All", name, v.Type, v.Multi, v.IncludeAll)
		}
		if def, _ := v.Default(); !slices.Equal(def, []string{promtest.All}) {
			t.Errorf("%s defaults to %q, want All", name, def)
		}
	}
	env := byName["environment"]
	if env.AllValue != "" {
		t.Errorf("environment allValue %q: All must stand for the listed (production) environments, not every one", env.AllValue)
	}
	q, _ := env.QueryString()
	if !strings.Contains(q, "lastmile_environment_info{") || !strings.Contains(q, `production=~"$production"`) {
		t.Errorf("environment query %q does not select by $production", q)
	}
	if def, _ := byName["production"].Default(); !slices.Equal(def, []string{"true"}) {
		t.Errorf("production defaults to %q, want true", def)
	}
	if def, _ := byName["window"].Default(); !slices.Equal(def, []string{"7d"}) {
		t.Errorf("window defaults to %q, want 7d", def)
	}
	opts, _ := byName["window"].CustomOptions()
	rules, err := promtest.LoadRuleFile("rules/lastmile.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range opts {
		if !slices.Contains(rules.Records(), "lastmile:deployments:success_rate"+w) {
			t.Errorf("window %s has no recording rules", w)
		}
	}
}
