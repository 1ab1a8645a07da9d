package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics/promtest"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func TestMain(m *testing.M) {
	code := m.Run()
	live.stop()
	os.Exit(code)
}

// live is the scenario served to a real Prometheus that loads the rules:
// started by the first test that needs it, stopped by TestMain.
var live liveState

type liveState struct {
	once sync.Once
	env  *liveEnv
	err  error

	mu   sync.Mutex
	prom *promtest.Server
	srv  *http.Server
}

type liveEnv struct {
	prom   *promtest.Server
	target string // host:port of the scenario's /metrics
	start  time.Time
	envs   []*envScenario
	at     time.Time // evaluation time: a scrape after the scenario happened, with the rules evaluated
}

func (l *liveState) get(t *testing.T) *liveEnv {
	t.Helper()
	l.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l.env, l.err = l.setup(ctx)
	})
	if l.err != nil {
		t.Fatal(l.err)
	}
	return l.env
}

func (l *liveState) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.prom != nil {
		l.prom.Stop()
	}
	if l.srv != nil {
		l.srv.Close()
	}
}

func (l *liveState) setup(ctx context.Context) (*liveEnv, error) {
	e := &liveEnv{start: time.Now()}
	e.envs = scenario(e.start)
	m, happen := newScenarioMetrics(e.envs, e.start)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	l.mu.Lock()
	l.srv = srv
	l.mu.Unlock()
	go srv.Serve(ln)
	e.target = ln.Addr().String()

	rules, err := promtest.RuleFiles()
	if err != nil {
		return nil, err
	}
	prom, err := promtest.Start(ctx, promtest.Config{Targets: []string{e.target}, RuleFiles: rules})
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.prom = prom
	l.mu.Unlock()
	e.prom = prom
	fail := func(err error) (*liveEnv, error) {
		return nil, fmt.Errorf("%w\nprometheus log:\n%s", err, prom.Log())
	}
	if err := prom.WaitForTargetsUp(ctx); err != nil {
		return fail(err)
	}
	// Before: Prometheus has seen every series at zero (twice, to be safe).
	if _, err := prom.WaitForSamples(ctx, `count_over_time(lastmile_build_info[5m])`, func(s []promtest.Sample) bool {
		return len(s) == 1 && s[0].Value >= 2
	}); err != nil {
		return fail(err)
	}
	// The delivery rules take increase() of the totals they record first
	// (lastmile:…:max): those must have recorded the zeros too, by an
	// evaluation after a scrape that saw them.
	zeros, err := prom.Query(ctx, `timestamp(lastmile_build_info)`, time.Time{})
	if err != nil || len(zeros) != 1 {
		return fail(fmt.Errorf("timestamp of the scrape before the scenario: %v %v", zeros, err))
	}
	if _, err := prom.WaitForEvaluation(ctx, promtest.UnixSeconds(zeros[0].Value), 2); err != nil {
		return fail(err)
	}
	happen()
	sel := `lastmile_deployments_total{repository="acme/shop", environment="production", state="success"}`
	if _, err := prom.WaitForSamples(ctx, sel, func(s []promtest.Sample) bool { return len(s) == 1 && s[0].Value == 2 }); err != nil {
		return fail(err)
	}
	ts, err := prom.Query(ctx, "timestamp("+sel+")", time.Time{})
	if err != nil || len(ts) != 1 {
		return fail(fmt.Errorf("timestamp of the scenario's samples: %v %v", ts, err))
	}
	// Ten seconds of samples at least: the recording rules' increase() over
	// a window extrapolates the last sample to their evaluation time, by at
	// most one scrape interval: within 10% of the counts with 10 intervals.
	if e.at, err = prom.WaitForEvaluation(ctx, promtest.UnixSeconds(ts[0].Value), 12); err != nil {
		return fail(err)
	}
	return e, nil
}

// want is an expected sample: the labels that identify it and the bounds
// of its value.
type want struct {
	labels map[string]string
	lo, hi float64
}

func (w want) String() string {
	if w.lo == w.hi {
		return fmt.Sprintf("%s %g", promtest.FormatLabels(w.labels), w.lo)
	}
	return fmt.Sprintf("%s in [%g, %g]", promtest.FormatLabels(w.labels), w.lo, w.hi)
}

// exact allows for floating point rounding only.
func exact(labels map[string]string, v float64) want {
	eps := 1e-9 * math.Max(1, math.Abs(v))
	return want{labels, v - eps, v + eps}
}

// count is a count of events from a recording rule's increase() (see setup):
// it must round to the scenario's number.
func count(labels map[string]string, n float64) want { return want{labels, n - 0.49, n + 0.49} }

func between(labels map[string]string, lo, hi float64) want { return want{labels, lo, hi} }

func envLabels(e *envScenario, kv ...string) map[string]string {
	l := map[string]string{"repository": e.repo, "environment": e.env}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// checkResult matches every returned sample to one expected sample.
func checkResult(t *testing.T, what string, r promtest.Result, wants []want) {
	t.Helper()
	if r.Err != nil {
		t.Errorf("%s: %s: %v", what, r.Expr, r.Err)
		return
	}
	used := make([]bool, len(wants))
	var problems []string
next:
	for _, s := range r.Samples {
		for i, w := range wants {
			if used[i] || !matches(s.Labels, w.labels) {
				continue
			}
			used[i] = true
			if !(s.Value >= w.lo && s.Value <= w.hi) {
				problems = append(problems, fmt.Sprintf("got %s, want %s", s, w))
			}
			continue next
		}
		problems = append(problems, fmt.Sprintf("unexpected sample %s", s))
	}
	for i, w := range wants {
		if !used[i] {
			problems = append(problems, fmt.Sprintf("missing sample %s", w))
		}
	}
	if len(problems) > 0 {
		t.Errorf("%s: %s:\n  %s", what, r.Expr, strings.Join(problems, "\n  "))
	}
}

func matches(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// deliveryWants gives, per panel query of the delivery dashboard, what the
// scenario implies for the selected environments at time at.
func deliveryWants(selected []*envScenario, at time.Time) map[string][]want {
	out := map[string][]want{}
	add := func(key string, f func(e *envScenario) []want) {
		out[key] = []want{} // an empty result is expected when nothing applies
		for _, e := range selected {
			out[key] = append(out[key], f(e)...)
		}
	}
	quantile := func(has func(e *envScenario) bool, v func(e *envScenario) float64, q string) func(e *envScenario) []want {
		return func(e *envScenario) []want {
			if !has(e) {
				return nil
			}
			return []want{exact(envLabels(e, "quantile", q), v(e))}
		}
	}
	successes := func(e *envScenario) []want {
		return []want{count(envLabels(e, "state", "success"), e.deployments["success"])}
	}
	hasLead := func(e *envScenario) bool { return e.hasLead }
	hasDuration := func(e *envScenario) bool { return e.hasDuration }
	hasApproval := func(e *envScenario) bool { return e.hasApproval }
	hasRestore := func(e *envScenario) bool { return e.hasRestore }

	add("Successful deployments, last 7 days/A", successes)
	add("Deploy frequency: successful deployments per 24 hours/A", successes)
	for _, title := range []string{"Deployment success rate ($window)/A", "Deployment success rate over time ($window)/A"} {
		add(title, func(e *envScenario) []want { return []want{exact(envLabels(e), e.successRate)} })
	}
	add("Time since last successful deployment/A", func(e *envScenario) []want {
		if e.lastSuccess.IsZero() {
			return nil
		}
		v := at.Sub(e.lastSuccess).Seconds()
		return []want{between(envLabels(e), v-1e-6, v+1e-6)}
	})
	add("Deployments by outcome ($window)/A", func(e *envScenario) []want {
		var w []want
		for state, n := range e.deployments {
			w = append(w, count(envLabels(e, "state", state), n))
		}
		return w
	})
	add("Lead time for changes, median ($window)/A", quantile(hasLead, func(e *envScenario) float64 { return e.leadP50 }, "0.5"))
	add("Lead time for changes ($window): median and p90/A", quantile(hasLead, func(e *envScenario) float64 { return e.leadP50 }, "0.5"))
	add("Lead time for changes ($window): median and p90/B", quantile(hasLead, func(e *envScenario) float64 { return e.leadP90 }, "0.9"))
	add("Approval wait ($window): median and p90/A", quantile(hasApproval, func(e *envScenario) float64 { return e.approvalP50 }, "0.5"))
	add("Approval wait ($window): median and p90/B", quantile(hasApproval, func(e *envScenario) float64 { return e.approvalP90 }, "0.9"))
	add("Time to restore ($window): median/A", quantile(hasRestore, func(e *envScenario) float64 { return e.restoreP50 }, "0.5"))
	add("Deployment duration ($window): median and p90/A", quantile(hasDuration, func(e *envScenario) float64 { return e.durationP50 }, "0.5"))
	add("Deployment duration ($window): median and p90/B", quantile(hasDuration, func(e *envScenario) float64 { return e.durationP90 }, "0.9"))
	return out
}

// evaluateDashboard resolves the variables (overrides on the saved
// defaults), evaluates every panel query at env.at and checks each against
// wants, which must name every query of the dashboard.
func evaluateDashboard(t *testing.T, env *liveEnv, d *promtest.Dashboard, overrides map[string][]string, check func(vs *promtest.Vars) map[string][]want) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	builtins := map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
	vs, err := d.Resolve(ctx, env.prom, env.at, overrides, builtins)
	if err != nil {
		t.Fatal(err)
	}
	wants := check(vs)
	results, err := d.Evaluate(ctx, env.prom, vs, env.at)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range results {
		key := r.Key()
		if seen[key] {
			t.Errorf("two queries named %q", key)
		}
		seen[key] = true
		w, ok := wants[key]
		if !ok {
			t.Errorf("no expectation for query %q (%s)", key, r.Expr)
			continue
		}
		checkResult(t, key, r, w)
	}
	for key := range wants {
		if !seen[key] {
			t.Errorf("expectation for %q, which is not a query of the dashboard", key)
		}
	}
}

func TestDeliveryDashboardAgainstPrometheus(t *testing.T) {
	env := live.get(t)
	d := loadDashboards(t)["delivery"]
	for _, tc := range []struct {
		name      string
		overrides map[string][]string
		repos     []string // nil: all
		prod      string   // "true", "false", or "" for all
		envNames  []string // nil: all
	}{
		{name: "defaults", prod: "true"},
		{name: "window 1d", overrides: map[string][]string{"window": {"1d"}}, prod: "true"},
		{name: "window 30d", overrides: map[string][]string{"window": {"30d"}}, prod: "true"},
		{name: "one repository, every environment",
			overrides: map[string][]string{"repository": {"acme/shop"}, "production": {promtest.All}},
			repos:     []string{"acme/shop"}},
		{name: "production environment named production",
			overrides: map[string][]string{"environment": {"production"}},
			prod:      "true", envNames: []string{"production"}},
		{name: "two repositories, non-production",
			overrides: map[string][]string{"repository": {"acme/blog.site", "acme/docs"}, "production": {"false"}},
			repos:     []string{"acme/blog.site", "acme/docs"}, prod: "false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var selected []*envScenario
			var envOptions []string
			for _, e := range env.envs {
				if tc.repos != nil && !slices.Contains(tc.repos, e.repo) || tc.prod != "" && strconv.FormatBool(e.production) != tc.prod {
					continue
				}
				if !slices.Contains(envOptions, e.env) {
					envOptions = append(envOptions, e.env)
				}
				if tc.envNames == nil || slices.Contains(tc.envNames, e.env) {
					selected = append(selected, e)
				}
			}
			sort.Strings(envOptions)
			if len(selected) == 0 {
				t.Fatal("the case selects no environment of the scenario")
			}
			evaluateDashboard(t, env, d, tc.overrides, func(vs *promtest.Vars) map[string][]want {
				if tc.envNames == nil {
					if got := vs.Selected("environment"); !slices.Equal(got, envOptions) {
						t.Errorf("environment variable: All = %q, want %q", got, envOptions)
					}
				}
				return deliveryWants(selected, env.at)
			})
		})
	}
}

func TestOperationsDashboardAgainstPrometheus(t *testing.T) {
	env := live.get(t)
	d := loadDashboards(t)["operations"]
	const window = 300.0 // $__rate_interval: 5m, longer than the scenario's history
	none := map[string]string{}
	perSecond := func(label string, counts map[string]float64) []want {
		var w []want
		for v, n := range counts {
			w = append(w, exact(map[string]string{label: v}, n/window))
		}
		return w
	}
	webhooks := map[string]float64{}
	for k, n := range scenarioWebhooks {
		webhooks[k[1]] += n
	}
	webhooks["too_large"]++ // refused by this process, flushed by the scrape
	github := map[string]float64{}
	for k, n := range scenarioGitHub {
		github[k[1]] += n
	}
	github["200"]++ // this process's call, flushed by the scrape
	oldest := env.at.Sub(env.start.Add(-scenarioOldest)).Seconds()
	awaiting := env.at.Sub(env.start.Add(-scenarioAwaiting).Truncate(time.Second)).Seconds()
	wants := map[string][]want{
		"Webhook deliveries by outcome/A":             perSecond("outcome", webhooks),
		"GitHub API requests by status code/A":        perSecond("code", github),
		"Inbox: pending deliveries/A":                 {exact(none, float64(scenarioPending))},
		"Inbox: age of the oldest pending delivery/A": {between(none, oldest-1, oldest+1)},
		"Dead deliveries/A":                           {exact(none, float64(scenarioDead))},
		"Worker: deliveries handled by result/A":      perSecond("result", map[string]float64{"done": 4, "retry": 1, "dead": 0}),
		// 4 handled in (0.01, 0.025], 1 in (1, 2.5]: the median is rank 2.5
		// of 4 in the first, p99 rank 4.95, 95% into the second.
		"Worker: handling latency/A": {exact(none, 0.01+0.015*2.5/4)},
		"Worker: handling latency/B": {exact(none, 1+1.5*0.95)},
		// Installation 43's window refilled since it was spent: not shown.
		"GitHub rate limit: remaining vs limit/A": {exact(map[string]string{"installation": "42", "resource": "core"}, 4000)},
		"GitHub rate limit: remaining vs limit/B": {exact(map[string]string{"installation": "42", "resource": "core"}, 5000)},
		"Metrics: database read errors/A":         {exact(none, 0)},
		"Process: resident memory/A":              {between(map[string]string{"instance": env.target}, 1<<20, 1<<34)},
		"Go: goroutines/A":                        {between(map[string]string{"instance": env.target}, 1, 1e5)},
		"Build info/A":                            {exact(map[string]string{"instance": env.target, "version": "test-version"}, 1)},
		"Deployments waiting for a workflow run/A": {between(map[string]string{"repository": "acme/shop", "environment": "production"},
			awaiting-1, awaiting+1)},
	}
	for _, tc := range []struct {
		name      string
		overrides map[string][]string
	}{
		{"defaults", nil},
		{"one instance", map[string][]string{"instance": {env.target}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evaluateDashboard(t, env, d, tc.overrides, func(vs *promtest.Vars) map[string][]want {
				if got := vs.Selected("instance"); !slices.Equal(got, []string{env.target}) {
					t.Errorf("instance variable = %q, want [%s]", got, env.target)
				}
				return wants
			})
		})
	}
}

// The rules load and evaluate without errors in a real Prometheus, every
// recording rule records something for the scenario, and the alerts that
// the scenario calls for are pending or firing while the others are not.
func TestRulesInPrometheus(t *testing.T) {
	env := live.get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file, err := promtest.LoadRuleFile("rules/lastmile.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	groups, err := env.prom.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var records, alerts []string
	active := map[string]string{}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Health != "ok" || r.LastError != "" {
				t.Errorf("rule %s (group %s): health %q, error %q", r.Name, g.Name, r.Health, r.LastError)
			}
			switch r.Type {
			case "recording":
				records = append(records, r.Name)
			case "alerting":
				alerts = append(alerts, r.Name)
				active[r.Name] = r.State
			}
		}
	}
	slices.Sort(records)
	records = slices.Compact(records)
	slices.Sort(alerts)
	if !slices.Equal(records, file.Records()) || !slices.Equal(alerts, file.Alerts()) {
		t.Errorf("Prometheus loaded records %q and alerts %q, want %q and %q", records, alerts, file.Records(), file.Alerts())
	}
	for _, name := range records {
		got, err := env.prom.Query(ctx, "count("+name+")", env.at)
		if err != nil || len(got) != 1 || got[0].Value < 1 {
			t.Errorf("%s: nothing recorded (%v, %v)", name, got, err)
		}
	}
	// Dead deliveries (1), GitHub calls failing (2 of 15: 13%) and a
	// deployment no run has taken up for 15 minutes fire once their `for`
	// has passed; the scenario triggers nothing else.
	for name, state := range active {
		switch wantActive := name == "LastmileDeadDeliveries" || name == "LastmileGitHubRequestsFailing" ||
			name == "LastmileDeploymentNotTakenUp"; {
		case wantActive && state != "pending" && state != "firing":
			t.Errorf("alert %s is %s, want pending or firing", name, state)
		case !wantActive && state != "inactive":
			t.Errorf("alert %s is %s, want inactive", name, state)
		}
	}
	if len(active) == 0 {
		t.Error(errors.New("no alerting rules loaded"))
	}
}
