package app

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// A commit lastmile decided about as a protection rule but never released
// (a hotfix on another branch deployed by hand to production, rejected) is
// not an unknown commit: audit and the read API still find no release of
// it (exit 1, 404), and say what lastmile decided — which no record shows.
func TestAuditOfACommitLastmileDecidedAboutWithoutARelease(t *testing.T) {
	const token = "0123456789abcdef-token"
	sb := sandbox(t, func(c *Config) { c.APIToken = token })
	ctx := context.Background()
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	repo := pipeline.Repo{ID: 990001, Owner: "acme", Name: "site", InstallationID: 990002}
	hotfix := strings.Repeat("d4", 20)
	d := &pipeline.ProtectionDecision{Repo: repo, DeliveryID: "delivery-1", RunID: 77, Environment: "production", SHA: hotfix,
		State: pipeline.ProtectionRejected, Comment: "lastmile rejects: no release of this commit", DecidedAt: t0}
	if err := sb.App.DB().RecordProtectionDecision(ctx, d); err != nil {
		t.Fatal(err)
	}
	msg := "acme/site@" + hotfix[:7] + ": not found: no release of that commit; lastmile decided on a deployment of it, as its protection rule (1 decision)"

	code, out, errOut := run(t, sb.Config.Database, "audit", "acme/site", hotfix[:7])
	want := "lastmile: " + msg + ":\n  " + when(t0) + "  run 77, production: rejected, not confirmed by GitHub (sent again for an hour while it holds) — lastmile rejects: no release of this commit\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("audit: exit %d, stdout %q, stderr\n%s\nwant exit 1, stderr\n%s", code, out, errOut, want)
	}
	check := func(what, body string) {
		t.Helper()
		var got struct {
			Message   string                        `json:"message"`
			Decisions []pipeline.ProtectionDecision `json:"protection_decisions"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || got.Message != msg || len(got.Decisions) != 1 ||
			got.Decisions[0].RunID != 77 || got.Decisions[0].SHA != hotfix || got.Decisions[0].State != pipeline.ProtectionRejected {
			t.Errorf("%s: %s; want the message and lastmile's decision", what, body)
		}
	}
	code, out, errOut = run(t, sb.Config.Database, "audit", "--json", "acme/site", hotfix[:7])
	if code != 1 || !strings.Contains(errOut, msg) {
		t.Errorf("audit --json: exit %d, stderr %q; want exit 1, the message", code, errOut)
	}
	check("audit --json", out)
	code, body := request(t, http.MethodGet, sb.URL()+"/api/v1/releases/acme/site/"+hotfix[:7], "Bearer "+token)
	if code != http.StatusNotFound {
		t.Errorf("GET the release: %d, want 404", code)
	}
	check("GET the release", body)
	// A commit lastmile knows nothing of is as it was.
	if code, _, errOut := run(t, sb.Config.Database, "audit", "acme/site", "9999999"); code != 1 || !strings.HasSuffix(errOut, "no release of that commit\n") {
		t.Errorf("audit of an unknown commit: exit %d, stderr %q", code, errOut)
	}
}
