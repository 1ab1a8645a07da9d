package promtest

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum by (job, le) (rate(http_requests_total{code=~"5..", path="/a{b}"}[5m] offset 1h))`, []string{"http_requests_total"}},
		{`sum(rate(a_total[1m])) by (job) / on (job) group_left (instance) max without (le) (b)`, []string{"a_total", "b"}},
		{`histogram_quantile(0.9, sum by (le) (rate(x_bucket[$__rate_interval]))) > 1e3 and bool 0x1f`, []string{"x_bucket"}},
		{`time() - max by (repository) (lastmile_last_success_timestamp_seconds) > on (repository) group_left () lastmile:threshold`, []string{"lastmile:threshold", "lastmile_last_success_timestamp_seconds"}},
		{`lastmile:deployments:success_rate7d{repository=~"(a|b)"} and on (repository, environment) lastmile_environment_info{production=~".*"}`, []string{"lastmile:deployments:success_rate7d", "lastmile_environment_info"}},
		{"count_values(\"v\", a) # a comment naming not_a_metric\n + b unless c or d", []string{"a", "b", "c", "d"}},
		{`vector(1) + .5 - 2.5e-3 * inf`, nil},
		{`topk(3, x) or bottomk by (a) (2, y)`, []string{"x", "y"}},
	} {
		got, err := MetricNames(tc.expr)
		if err != nil {
			t.Errorf("MetricNames(%q): %v", tc.expr, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("MetricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`{__name__=~"lastmile_.+"}`, `x{a="b}`, `rate(x[5m)`} {
		if got, err := MetricNames(bad); err == nil {
			t.Errorf("MetricNames(%q) = %q, want an error", bad, got)
		}
	}
}

func variable(t *testing.T, js string) Variable {
	t.Helper()
	var v Variable
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestInterpolate(t *testing.T) {
	multi := variable(t, `{"name": "repo", "type": "query", "multi": true, "includeAll": true}`)
	withAllValue := variable(t, `{"name": "prod", "type": "custom", "includeAll": true, "allValue": ".*"}`)
	single := variable(t, `{"name": "window", "type": "custom"}`)
	vs := &Vars{
		vars: map[string]resolved{
			"repo":   {v: multi, values: []string{"acme/blog.site", "acme/shop"}, all: true},
			"one":    {v: multi, values: []string{"a+b"}},
			"prod":   {v: withAllValue, values: []string{"true", "false"}, all: true},
			"prod1":  {v: withAllValue, values: []string{"true"}},
			"window": {v: single, values: []string{`7d\'`}},
		},
		builtins: map[string]string{"__rate_interval": "5m"},
	}
	for _, tc := range []struct{ in, want string }{
		{`x{r=~"$repo"}`, `x{r=~"(acme/blog\\.site|acme/shop)"}`},
		{`x{r=~"${one}"}`, `x{r=~"a\\+b"}`},
		{`x{p=~"$prod"}[$__rate_interval]`, `x{p=~".*"}[5m]`},
		{`x{p=~"[[prod1]]"}`, `x{p=~"true"}`},
		{`lastmile:x${window}`, `lastmile:x7d\\\\'`},
	} {
		got, err := vs.Interpolate(tc.in)
		if err != nil {
			t.Errorf("Interpolate(%q): %v", tc.in, err)
		} else if got != tc.want {
			t.Errorf("Interpolate(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{`$nope`, `${repo:csv}`} {
		if got, err := vs.Interpolate(bad); err == nil {
			t.Errorf("Interpolate(%q) = %q, want an error", bad, got)
		}
	}
}

func TestCustomOptionsAndDefault(t *testing.T) {
	v := variable(t, `{"name": "w", "type": "custom", "query": "1d, week : 7d,30d", "current": {"value": "7d"}}`)
	opts, err := v.CustomOptions()
	if err != nil || !slices.Equal(opts, []string{"1d", "7d", "30d"}) {
		t.Errorf("CustomOptions = %q, %v", opts, err)
	}
	if d, err := v.Default(); err != nil || !slices.Equal(d, []string{"7d"}) {
		t.Errorf("Default = %q, %v", d, err)
	}
	v = variable(t, `{"name": "e", "type": "query", "query": {"query": "label_values(e)"}, "current": {"value": ["$__all"]}}`)
	if q, err := v.QueryString(); err != nil || q != "label_values(e)" {
		t.Errorf("QueryString = %q, %v", q, err)
	}
	if d, err := v.Default(); err != nil || !slices.Equal(d, []string{All}) {
		t.Errorf("Default = %q, %v", d, err)
	}
}
