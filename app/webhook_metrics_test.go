package app

import (
	"net/http"
	"strings"
	"testing"
)

// A wrong webhook secret from the first day must raise the signature
// alerts, which use increase(): a series that first appears at 1 adds
// nothing to it. So a fresh lastmile exposes the webhook outcome series at
// 0, and the first refused delivery moves one to 1.
func TestWebhookOutcomesAreExposedAtZeroFromStartUp(t *testing.T) {
	sb := sandbox(t, nil)
	unauthorized := `lastmile_webhook_deliveries_total{event="push",outcome="unauthorized"} `
	accepted := `lastmile_webhook_deliveries_total{event="push",outcome="accepted"} `
	body := get(t, sb.URL()+"/metrics")
	for _, want := range []string{unauthorized + "0\n", accepted + "0\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("a fresh lastmile's /metrics lacks %q", want)
		}
	}

	req, err := http.NewRequest(http.MethodPost, sb.URL()+"/webhook", strings.NewReader(`{"zen":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "d-wrong-secret")
	req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a delivery signed with another secret: %d, want 401", resp.StatusCode)
	}
	if body := get(t, sb.URL()+"/metrics"); !strings.Contains(body, unauthorized+"1\n") {
		t.Errorf("after one refused delivery, /metrics lacks %q", unauthorized+"1")
	}
}

// The operators' alert on failing GitHub calls is a ratio of rate()s of
// lastmile_github_requests_total: a code's first calls, GitHub down from
// the start, must count in it. So a fresh lastmile exposes the failures'
// series at 0.
func TestGitHubRequestFailuresAreExposedAtZeroFromStartUp(t *testing.T) {
	sb := sandbox(t, nil)
	body := get(t, sb.URL()+"/metrics")
	for _, want := range []string{
		`lastmile_github_requests_total{code="error",method="POST"} 0` + "\n",
		`lastmile_github_requests_total{code="502",method="GET"} 0` + "\n",
		`lastmile_github_requests_total{code="429",method="POST"} 0` + "\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("a fresh lastmile's /metrics lacks %q", want)
		}
	}
}
