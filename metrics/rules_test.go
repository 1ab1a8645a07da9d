package metrics

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics/promtest"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.yaml.in/yaml/v3"
)

// promtool returns the promtool binary ($PROMTOOL or PATH); the test fails
// without it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := promtest.Binary("promtool", "PROMTOOL")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func runPromtool(t *testing.T, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func glob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	return files
}

func TestRulesCheck(t *testing.T) {
	out, err := runPromtool(t, nil, append([]string{"check", "rules"}, glob(t, "rules/*.yml")...)...)
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Log(out)
}

func TestRulesUnitTests(t *testing.T) {
	out, err := runPromtool(t, nil, append([]string{"test", "rules"}, glob(t, "rules/tests/*.yml")...)...)
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	if strings.Contains(out, "FAILED") || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}

// promtoolTests is the part of a promtool test file this package checks.
type promtoolTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		AlertRuleTests []struct {
			AlertName string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTests []struct {
			Expr       string `yaml:"expr"`
			ExpSamples []any  `yaml:"exp_samples"`
		} `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

// Every recording rule is checked by a promql_expr_test that gives values,
// and every alert by a case where it fires and one where it does not.
func TestRulesUnitTestsCoverEveryRule(t *testing.T) {
	recorded := map[string]bool{}
	fires := map[string]bool{}
	silent := map[string]bool{}
	for _, path := range glob(t, "rules/tests/*.yml") {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f promtoolTests
		if err := yaml.Unmarshal(b, &f); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !slices.Contains(f.RuleFiles, "../lastmile.rules.yml") {
			t.Errorf("%s does not load ../lastmile.rules.yml", path)
		}
		for _, tc := range f.Tests {
			for _, e := range tc.PromQLExprTests {
				names, err := promtest.MetricNames(e.Expr)
				if err != nil {
					t.Errorf("%s: %v", path, err)
				}
				if len(e.ExpSamples) > 0 {
					for _, n := range names {
						recorded[n] = true
					}
				}
			}
			for _, a := range tc.AlertRuleTests {
				if len(a.ExpAlerts) > 0 {
					fires[a.AlertName] = true
				} else {
					silent[a.AlertName] = true
				}
			}
		}
	}
	rules, err := promtest.LoadRuleFile("rules/lastmile.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if len(rules.Records()) == 0 || len(rules.Alerts()) == 0 {
		t.Fatalf("rules/lastmile.rules.yml: %d recording rules, %d alerts", len(rules.Records()), len(rules.Alerts()))
	}
	for _, r := range rules.Records() {
		if !recorded[r] {
			t.Errorf("recording rule %s has no promql_expr_test with expected samples", r)
		}
	}
	for _, a := range rules.Alerts() {
		if !fires[a] {
			t.Errorf("alert %s has no test where it fires", a)
		}
		if !silent[a] {
			t.Errorf("alert %s has no test where it does not fire", a)
		}
	}
}

// The exposition of a registry serving every series passes promtool's lint.
func TestExpositionPassesPromtoolCheckMetrics(t *testing.T) {
	m, happen := newScenarioMetrics(scenario(time.Now()), time.Now())
	happen()
	srv := httptest.NewServer(promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server on %s, want 127.0.0.1", srv.URL)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	for _, name := range exposedNames() {
		if !bytes.Contains(body, []byte("\n# TYPE "+name+" ")) {
			t.Errorf("the scrape has no %s", name)
		}
	}
	out, err := runPromtool(t, bytes.NewReader(body), "check", "metrics")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// exposedNames are the metric families lastmile itself defines.
func exposedNames() []string {
	return []string{
		DeploymentsTotal, LeadTime, DeploymentDuration, ApprovalWait, TimeToRestore, LastSuccess,
		EnvironmentInfo, EnvironmentLiveSince, WebhookDeliveries, GitHubRequests,
		InboxPending, InboxDead, InboxOldestPendingAge, AwaitingRunSince,
		"lastmile_github_rate_limit_remaining", "lastmile_github_rate_limit_limit", "lastmile_github_rate_limit_reset_timestamp_seconds",
		"lastmile_deliveries_handled_total", "lastmile_delivery_handling_seconds",
		"lastmile_metrics_source_errors_total", "lastmile_build_info",
	}
}
