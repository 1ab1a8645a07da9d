package app

import (
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

func TestDeliveryDetail(t *testing.T) {
	long := func(prefix, suffix string, n int) string { return prefix + strings.Repeat("x", n) + suffix }
	tests := map[string]struct {
		note, lastErr string
		want          string
		cut           bool
	}{
		"nothing":             {want: ""},
		"a note":              {note: "repository not enrolled", want: "repository not enrolled"},
		"an error":            {lastErr: "GitHub answered 502", want: "GitHub answered 502"},
		"both, short":         {note: "discarded", lastErr: "boom", want: "discarded; last error: boom"},
		"spaces and newlines": {lastErr: "line one\n\tline  two", want: "line one line two"},
		"a long error keeps its start and its cause": {
			lastErr: long("read config: ", ": 502 Server Error", 200),
			want:    "read config: " + strings.Repeat("x", 20) + "…" + strings.Repeat("x", 48) + ": 502 Server Error", cut: true,
		},
		"a long note": {
			note: long("not enrolled: ", " at abc", 200),
			want: "not enrolled: " + strings.Repeat("x", 19) + "…" + strings.Repeat("x", 59) + " at abc", cut: true,
		},
		"a short note and a long error": {
			note: "discarded by an operator: replayed", lastErr: long("GET http://", ": 502", 200),
			want: "discarded by an operator: replayed; last error: GET http://" + strings.Repeat("x", 6) + "…" + strings.Repeat("x", 29) + ": 502", cut: true,
		},
		"both long: the note gets half": {
			note: long("note ", " end", 200), lastErr: long("error ", " cause", 200),
			want: "note " + strings.Repeat("x", 11) + "…" + strings.Repeat("x", 29) + " end; last error: error " + strings.Repeat("x", 6) + "…" + strings.Repeat("x", 17) + " cause",
			cut:  true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, cut := deliveryDetail(tc.note, tc.lastErr, 100)
			if got != tc.want || cut != tc.cut {
				t.Errorf("got %q (cut %v), want %q (cut %v)", got, cut, tc.want, tc.cut)
			}
			if n := len([]rune(got)); n > 100 {
				t.Errorf("%d characters, more than 100", n)
			}
		})
	}
}

// The commands lastmile suggests (the demo's "Where to look") start as the
// user started lastmile, so that they can be pasted.
func TestCommandName(t *testing.T) {
	for _, tc := range []struct{ arg0, gocache, want string }{
		{"/tmp/go-build1715990240/b001/exe/lastmile", "", "go run ./cmd/lastmile"},                                                            // go run, first build
		{"/root/.cache/go-build/53/535638c8c60edddf1518b18e18ae93226749d31592ad0b2120a32b9d3cb3601d-d/lastmile", "", "go run ./cmd/lastmile"}, // go run, cached
		{"/srv/cache/gc/53/5356-d/lastmile", "/srv/cache/gc", "go run ./cmd/lastmile"},                                                        // $GOCACHE of another name
		{"/srv/cache/gc/53/5356-d/lastmile", "", "/srv/cache/gc/53/5356-d/lastmile"},
		{"./lastmile", "/root/.cache/go-build", "./lastmile"},
		{"bin/lastmile", "", "bin/lastmile"},
		{"/usr/local/bin/lastmile", "/root/.cache/go-build", "/usr/local/bin/lastmile"},
		{"/opt/my tools/lastmile", "", "'/opt/my tools/lastmile'"},
		{"./go-build-lastmile", "", "./go-build-lastmile"}, // the binary's own name is not a folder
		{"lastmile", "", "lastmile"},
		{"lm", "", "lm"}, // found on PATH under another name
		{"", "", "lastmile"},
	} {
		if got := commandName(tc.arg0, tc.gocache); got != tc.want {
			t.Errorf("commandName(%q, %q) = %q, want %q", tc.arg0, tc.gocache, got, tc.want)
		}
	}
}

// audit says of each job of a deployment what became of its log.
func TestPrintDeploymentSaysWhatBecameOfEachJobLog(t *testing.T) {
	d := &pipeline.DeploymentRecord{
		Deployment: pipeline.Deployment{GitHubID: 1001, State: pipeline.DeploymentSuccess},
		Jobs: []pipeline.JobRecord{
			{ID: 1, Name: "deploy", Conclusion: "success", LogBytes: 120},
			{ID: 2, Name: "deploy", Conclusion: "success", LogBytes: 1024, LogTruncated: true},
			{ID: 3, Name: "deploy", Conclusion: "success", LogPruned: true},
			{ID: 4, Name: "deploy", Conclusion: "success", LogMissing: true},
			{ID: 5, Name: "build", Conclusion: "success"},
			// Pruned, it says what had been kept, as its JSON does.
			{ID: 6, Name: "deploy", Conclusion: "success", LogBytes: 1112, LogTruncated: true, LogPruned: true},
			{ID: 7, Name: "deploy", Conclusion: "failure", LogBytes: 96, LogPruned: true},
		},
	}
	var b strings.Builder
	printDeployment(&b, d)
	for _, want := range []string{
		`job 1 "deploy": success, log kept (120 bytes)` + "\n",
		`job 2 "deploy": success, log kept (1024 bytes, cut: the configured maximum of it kept, and a line saying how much was cut)` + "\n",
		`job 3 "deploy": success, log pruned by retention` + "\n",
		`job 4 "deploy": success, no log kept: GitHub had no log for it` + "\n",
		`job 5 "build": success` + "\n",
		`job 6 "deploy": success, log pruned by retention (1112 bytes, cut: the configured maximum of it kept, and a line saying how much was cut)` + "\n",
		`job 7 "deploy": failure, log pruned by retention (96 bytes)` + "\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("audit lacks %q:\n%s", want, b.String())
		}
	}
}

// audit of a commit a release brought says so first, and names the other
// releases that brought it.
func TestPrintAuditOfABroughtCommit(t *testing.T) {
	rec := &pipeline.AuditRecord{
		Release:       pipeline.Release{ID: 3, SHA: "f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6f6", Repo: pipeline.Repo{Owner: "acme", Name: "shop"}},
		BroughtCommit: &pipeline.Commit{SHA: "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2", Title: "Fix rounding"},
		OtherReleases: []int64{1},
	}
	var b strings.Builder
	printAudit(&b, rec)
	for _, want := range []string{
		"Commit b2b2b2b \"Fix rounding\" was brought by release #3 (head f6f6f6f): the release deploys its head, which contains it.\n\nRelease #3 of acme/shop",
		"  commit b2b2b2b is also in #1, as its head or a commit it brought (see them with --release)\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("audit lacks %q:\n%s", want, b.String())
		}
	}
}

// A release stopped for an invalid configuration has no environments:
// audit prints no heading without anything under it.
func TestPrintAuditWithoutEnvironments(t *testing.T) {
	rec := &pipeline.AuditRecord{Release: pipeline.Release{ID: 1, SHA: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", Repo: pipeline.Repo{Owner: "acme", Name: "shop"},
		State: pipeline.ReleaseStopped, StopKind: pipeline.StopConfigError, StopReason: ".github/lastmile.yml: environments: empty list"}}
	var b strings.Builder
	printAudit(&b, rec)
	if strings.Contains(b.String(), "Environments") || !strings.Contains(b.String(), "state: stopped (config_error): .github/lastmile.yml") {
		t.Errorf("audit of a release stopped for its configuration:\n%s", b.String())
	}
	// A release whose configuration names the environment, not there yet.
	rec.Release.State, rec.Release.StopKind, rec.Release.StopReason = pipeline.ReleaseActive, "", ""
	rec.Release.Config = &pipeline.Config{Environments: []pipeline.Environment{{Name: "production"}}}
	rec.Environments = []pipeline.EnvironmentRecord{{Name: "production"}}
	b.Reset()
	printAudit(&b, rec)
	if !strings.Contains(b.String(), "\nEnvironments:\n  production: not reached\n") {
		t.Errorf("audit of a release with an environment:\n%s", b.String())
	}
	// Brought there by a newer release that built on it.
	at := time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)
	rec.Environments[0].ReachedWith = &pipeline.Arrival{ReleaseID: 2, SHA: "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2", DeploymentID: 77, At: at}
	b.Reset()
	printAudit(&b, rec)
	if want := "  production: not deployed by this release\n    the commit reached it with release #2 (b2b2b2b): deployment 77, succeeded " + when(at) + "\n"; !strings.Contains(b.String(), want) {
		t.Errorf("audit of a release whose commit a newer one brought lacks %q:\n%s", want, b.String())
	}
}

// The audit of a baseline release says that its commits are the history
// of the branch its push created, and that only its head has a lead time.
func TestPrintAuditOfABaseline(t *testing.T) {
	rec := &pipeline.AuditRecord{Release: pipeline.Release{ID: 1, SHA: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", Ref: "refs/heads/main",
		Repo: pipeline.Repo{Owner: "acme", Name: "shop"}, Baseline: true},
		Commits: []pipeline.Commit{{SHA: "0101010101010101010101010101010101010101"}, {SHA: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"}}}
	var b strings.Builder
	printAudit(&b, rec)
	if want := "\nCommits (2; a baseline: the push created main with this history, and only a1a1a1a counts for lead time):\n"; !strings.Contains(b.String(), want) {
		t.Errorf("audit lacks %q:\n%s", want, b.String())
	}
	rec.Release.Baseline = false
	b.Reset()
	printAudit(&b, rec)
	if !strings.Contains(b.String(), "\nCommits (2):\n") {
		t.Errorf("audit of a release that is no baseline:\n%s", b.String())
	}
}

// The fields of a record that come from a webhook, a job's conclusion and a
// run's status among them, are printed on their line: a newline in one
// cannot forge a line of the record.
func TestPrintAuditKeepsPayloadFieldsOnTheirLine(t *testing.T) {
	forged := "success\n  production [production]: success (forged)"
	rec := &pipeline.AuditRecord{Release: pipeline.Release{ID: 1, SHA: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", Repo: pipeline.Repo{Owner: "acme", Name: "shop"}},
		Environments: []pipeline.EnvironmentRecord{{Name: "test", Deployments: []pipeline.DeploymentRecord{{
			Runs: []pipeline.RunRecord{{ID: 7, Name: "deploy", Attempt: 1, Status: "completed\nx", Conclusion: forged}},
			Jobs: []pipeline.JobRecord{{ID: 8, Name: "deploy", Conclusion: forged}},
		}}}}}
	var b strings.Builder
	printAudit(&b, rec)
	if strings.Contains(b.String(), "\n  production [production]") || strings.Contains(b.String(), "\nx") {
		t.Errorf("a payload's newline forged a line of the record:\n%s", b.String())
	}
}

// A protection-rule decision lastmile recorded but GitHub does not have
// yet (its answer endpoint failed) does not read as delivered: its job
// still waits, whatever lastmile decided.
func TestPrintAuditSaysWhichDecisionsGitHubDoesNotHave(t *testing.T) {
	at := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	rec := &pipeline.AuditRecord{Release: pipeline.Release{ID: 1, SHA: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", Repo: pipeline.Repo{Owner: "acme", Name: "shop"}},
		ProtectionDecisions: []pipeline.ProtectionDecision{
			{RunID: 41, Environment: "production", State: pipeline.ProtectionApproved, Comment: "lastmile approves: staging succeeded", DecidedAt: at, Posted: true},
			{RunID: 42, Environment: "production", State: pipeline.ProtectionApproved, Comment: "lastmile approves: staging succeeded", DecidedAt: at},
			{RunID: 43, Environment: "production", State: pipeline.ProtectionRejected, Comment: "lastmile rejects: not released", DecidedAt: at},
			{RunID: 44, Environment: "production", State: pipeline.ProtectionWaiting, Comment: "waits for staging", DecidedAt: at},
			{RunID: 45, Environment: "production", State: pipeline.ProtectionApproved, Comment: "lastmile approves: staging succeeded", DecidedAt: at,
				Withdrawn: &pipeline.ProtectionWithdrawal{At: at.Add(time.Minute), Comment: "lastmile rejects: backwards"}},
			{RunID: 46, Environment: "production", State: pipeline.ProtectionApproved, Comment: "lastmile approves: staging succeeded", DecidedAt: at,
				Withdrawn: &pipeline.ProtectionWithdrawal{At: at.Add(time.Minute), Comment: "lastmile rejects: backwards"}, Posted: true},
			{RunID: 47, Environment: "production", State: pipeline.ProtectionApproved, Comment: "lastmile approves: staging succeeded", DecidedAt: at,
				Withdrawn: &pipeline.ProtectionWithdrawal{At: at.Add(time.Minute), Comment: "lastmile rejects: backwards"}, Posted: true, Refused: true},
			{RunID: 48, Environment: "production", State: pipeline.ProtectionRejected, Comment: "lastmile rejects: not released", DecidedAt: at, Posted: true, Refused: true},
		}}
	var b strings.Builder
	printAudit(&b, rec)
	for _, want := range []string{
		"  " + when(at) + "  run 41, production: approved — lastmile approves: staging succeeded\n",
		"  " + when(at) + "  run 42, production: approved, not confirmed by GitHub (sent again for an hour while it holds) — lastmile approves: staging succeeded\n",
		"  " + when(at) + "  run 43, production: rejected, not confirmed by GitHub (sent again for an hour while it holds) — lastmile rejects: not released\n",
		// Waiting is not sent: it says itself that the job waits.
		"  " + when(at) + "  run 44, production: waiting — waits for staging\n",
		// A withdrawn approval: the approval GitHub never confirmed, and
		// the rejection sent instead, confirmed or not.
		"  " + when(at) + "  run 45, production: approved, not confirmed by GitHub — lastmile approves: staging succeeded\n" +
			"    " + when(at.Add(time.Minute)) + "  approval withdrawn, rejected instead, not confirmed by GitHub (sent again for an hour while it holds) — lastmile rejects: backwards\n",
		"  " + when(at) + "  run 46, production: approved, not confirmed by GitHub — lastmile approves: staging succeeded\n" +
			"    " + when(at.Add(time.Minute)) + "  approval withdrawn, rejected instead — lastmile rejects: backwards\n",
		// GitHub refused it: the run no longer waited for the rule (the
		// approval perhaps taken, for the rejection that withdrew it).
		"  " + when(at) + "  run 47, production: approved, not confirmed by GitHub — lastmile approves: staging succeeded\n" +
			"    " + when(at.Add(time.Minute)) + "  approval withdrawn, rejected instead, refused by GitHub (the run no longer waited for this rule): GitHub may have taken the approval — lastmile rejects: backwards\n",
		"  " + when(at) + "  run 48, production: rejected, refused by GitHub (the run no longer waited for this rule) — lastmile rejects: not released\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("audit lacks %q:\n%s", want, b.String())
		}
	}
}
