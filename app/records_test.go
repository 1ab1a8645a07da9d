package app

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// promoted runs one release through three environments, a reviewer
// approving production, and returns the sandbox and the release's SHA.
func promoted(t *testing.T, configure func(*Config)) (*Sandbox, string) {
	t.Helper()
	sb := sandbox(t, configure)
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"production": simulator.AutoApprove("bob", "ship it")}, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Add lastmile\n\nlong body", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)
	return sb, push.After
}

func run(t *testing.T, db string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string {
		if k == "LASTMILE_DATABASE" {
			return db
		}
		return ""
	}
	code = Main(context.Background(), args, getenv, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHistoryAndAuditCommands(t *testing.T) {
	sb, sha := promoted(t, nil)
	db := sb.Config.Database

	code, out, errOut := run(t, db, "history")
	if code != 0 || !strings.Contains(out, "acme/shop") || !strings.Contains(out, sha[:7]) ||
		!strings.Contains(out, "production:success") || !strings.Contains(out, "completed") {
		t.Errorf("history: exit %d\n%s%s", code, out, errOut)
	}
	// One push, one time: history says it as audit does (UTC, marked Z),
	// whatever the local time zone.
	_, auditOut, _ := run(t, db, "audit", "acme/shop", sha)
	if m := regexp.MustCompile(`pushed by .+ at (\S+ \S+Z);`).FindStringSubmatch(auditOut); m == nil || !strings.Contains(out, m[1]) {
		t.Errorf("the push time in history:\n%s\nis not audit's:\n%s", out, auditOut)
	}
	// Nothing matches the filters: the message says for which, as other
	// repositories have releases.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--env", "qa"}, "no releases deployed to qa\n"},
		{[]string{"--repo", "ACME/shop", "--env", "qa"}, "no releases of ACME/shop deployed to qa\n"},
	} {
		code, out, _ = run(t, db, append([]string{"history"}, tc.args...)...)
		if code != 0 || out != tc.want {
			t.Errorf("history %v: exit %d, %q; want %q", tc.args, code, out, tc.want)
		}
	}
	if code, out, _ := run(t, db, "history", "--repo", "acme/shop", "--env", "qa", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("history --json with nothing deployed to qa: exit %d, %q; want []", code, out)
	}
	// A repository lastmile never heard of (a misspelt name) is an error,
	// as in audit, not an empty history.
	for _, args := range [][]string{{"--repo", "acme/other"}, {"--repo", "acme/other", "--json"}, {"--repo", "acme/other", "--env", "production"}} {
		code, out, errOut := run(t, db, append([]string{"history"}, args...)...)
		if code != 1 || out != "" || !strings.Contains(errOut, "repository acme/other: not found: lastmile has no record of it") {
			t.Errorf("history %v: exit %d, stdout %q, stderr %q; want exit 1 and the repository unknown", args, code, out, errOut)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty.db")
	edb, err := storage.Open(context.Background(), empty)
	if err != nil {
		t.Fatal(err)
	}
	edb.Close()
	if code, out, _ := run(t, empty, "history"); code != 0 || out != "no releases recorded yet\n" {
		t.Errorf("history of an empty database: exit %d, %q", code, out)
	}

	code, out, errOut = run(t, db, "audit", "acme/shop", sha[:10])
	for _, want := range []string{"Release #1 of acme/shop at " + sha, "Add lastmile", "production [production]: success",
		`approved by bob: "ship it"`, "status success", "log kept"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit output lacks %q (exit %d)\n%s%s", want, code, out, errOut)
		}
	}
	code, out, _ = run(t, db, "audit", "--json", "acme/shop", sha)
	var rec pipeline.AuditRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec.Release.SHA != sha || len(rec.Environments) != 3 {
		t.Errorf("audit --json: exit %d\n%s", code, out)
	}
	// One naming for tools (snake_case, as GitHub's), and no zero times.
	for _, bad := range []string{`"GitHubID"`, `"CreatedAt"`, `"LogURL"`, "0001-01-01"} {
		if strings.Contains(out, bad) {
			t.Errorf("audit --json has %s:\n%s", bad, out)
		}
	}
	for _, want := range []string{`"github_id"`, `"created_at"`, `"log_url"`, `"state": "success"`} {
		if !strings.Contains(out, want) {
			t.Errorf("audit --json lacks %s:\n%s", want, out)
		}
	}
	code, out, _ = run(t, db, "audit", "acme/shop", sha, "--logs")
	if code != 0 || !strings.Contains(out, "--- log of job") {
		t.Errorf("audit --logs: exit %d\n%s", code, out)
	}

	for name, tc := range map[string]struct {
		args []string
		code int
		msg  string
	}{
		"unknown repository": {[]string{"audit", "acme/nope", sha}, 1, "acme/nope: not found"},
		"unknown commit":     {[]string{"audit", "acme/shop", "deadbeefdeadbeef"}, 1, "no release of that commit"},
		"not a sha":          {[]string{"audit", "acme/shop", "main"}, 2, `lastmile audit: "main" is not a commit SHA`},
		"missing arguments":  {[]string{"audit", "acme/shop"}, 2, "Usage: lastmile audit"},
		"no owner":           {[]string{"audit", "shop", sha}, 2, `"shop": give the repository as OWNER/REPO`},
		// Said shortened: the name is not echoed whole.
		"name too long": {[]string{"audit", "acme/" + strings.Repeat("s", 100000), sha}, 2,
			`"acme/` + strings.Repeat("s", 21) + "…" + strings.Repeat("s", 53) + `": longer than GitHub's names`},
		"control character":  {[]string{"history", "--repo", "acme/sh\x00p"}, 2, `--repo "acme/sh\x00p": a control character is in no repository's name`},
		"negative release":   {[]string{"audit", "--release", "-1", "acme/shop", sha}, 2, "--release -1"},
		"another release":    {[]string{"audit", "--release", "99", "acme/shop", sha}, 1, "release #99 is not a release of that commit"},
		"history limit of 0": {[]string{"history", "--limit", "0"}, 2, "--limit 0: use 1 or more"},
		"missing database":   {[]string{"audit", "--database", t.TempDir() + "/none.db", "acme/shop", sha}, 1, "none.db"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := run(t, db, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d, want %d; stderr %q lacks %q (stdout %q)", code, tc.code, errOut, tc.msg, out)
			}
		})
	}
}

// audit of a commit that a release brought but is not its head — the
// first of a push of two — shows that release, saying so, in the text, in
// its JSON and over the read API.
func TestAuditOfACommitAReleaseBrought(t *testing.T) {
	const token = "0123456789abcdef-token"
	sb := sandbox(t, func(c *Config) { c.APIToken = token })
	repo := sb.repo("shop", map[string]simulator.ReviewPolicy{"production": simulator.AutoApprove("bob", "ship it")}, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main",
		simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": threeEnvs}},
		simulator.CommitSpec{Message: "Fix rounding", Files: map[string]string{"totals.go": "package totals\n"}})
	waitFor(t, sb, "production success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "production") })
	settle(t, sb)
	first := push.Commits[0]
	db := sb.Config.Database

	code, out, errOut := run(t, db, "audit", "acme/shop", first[:7])
	want := fmt.Sprintf("Commit %s \"Add lastmile\" was brought by release #1 (head %s)", first[:7], push.After[:7])
	if code != 0 || !strings.HasPrefix(out, want) || !strings.Contains(out, "Release #1 of acme/shop at "+push.After) {
		t.Errorf("audit of a commit release #1 brought: exit %d; want it to start with %q\n%s%s", code, want, out, errOut)
	}
	code, out, _ = run(t, db, "audit", "--json", "acme/shop", first)
	var rec pipeline.AuditRecord
	if code != 0 || json.Unmarshal([]byte(out), &rec) != nil || rec.Release.SHA != push.After ||
		rec.BroughtCommit == nil || rec.BroughtCommit.SHA != first || rec.BroughtCommit.Title != "Add lastmile" {
		t.Errorf("audit --json of a commit release #1 brought: exit %d\n%s", code, out)
	}
	code, body := request(t, http.MethodGet, sb.URL()+"/api/v1/releases/acme/shop/"+first, "Bearer "+token)
	rec = pipeline.AuditRecord{}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rec) != nil || rec.Release.SHA != push.After ||
		rec.BroughtCommit == nil || rec.BroughtCommit.SHA != first {
		t.Errorf("GET the release of a commit release #1 brought: %d %s", code, body)
	}
}

func TestReadAPIRequiresTheToken(t *testing.T) {
	const token = "0123456789abcdef-token"
	sb, sha := promoted(t, func(c *Config) { c.APIToken = token })
	get := func(path, auth string) (int, string) { return request(t, http.MethodGet, sb.URL()+path, auth) }
	paths := []string{"/api/v1/history", "/api/v1/status", "/api/v1/releases/acme/shop/" + sha, "/api/v1/releases/acme/nope/" + sha, "/api/v1/jobs/1/log"}
	for _, p := range paths {
		for _, auth := range []string{"", "Bearer wrong", "Basic " + token, "Bearer " + token + "x", token, "Bearer", "bearer"} {
			code, body := get(p, auth)
			if code != http.StatusUnauthorized || strings.Contains(body, "acme") || strings.Contains(body, sha[:7]) {
				t.Errorf("GET %s with %q: %d %s", p, auth, code, body)
			}
		}
	}
	if code, _ := get("/api/v1/history", "bearer "+token); code != http.StatusOK {
		t.Errorf("the scheme in lower case (it is case-insensitive): %d", code)
	}
	// The API is read-only: another method is 405 with the token, 401
	// without it (nothing said before the token is checked).
	for _, p := range paths {
		for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodTrace, "PROPFIND", "FOO"} {
			if code, body := request(t, method, sb.URL()+p, "Bearer "+token); code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s with the token: %d %s, want 405", method, p, code, body)
			}
			if code, _ := request(t, method, sb.URL()+p, ""); code != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d, want 401", method, p, code)
			}
		}
	}
	// A parameter an endpoint does not take, or one given twice, is an
	// error, not a filter silently left out.
	for _, q := range []string{"/api/v1/history?repo=acme/shop", "/api/v1/history?limit=1&limit=2",
		"/api/v1/releases/acme/shop/" + sha + "?environment=production", "/api/v1/jobs/1/log?x=1", "/api/v1/status?environment=production"} {
		if code, body := get(q, "Bearer "+token); code != http.StatusBadRequest || !strings.Contains(body, "this endpoint takes") {
			t.Errorf("GET %s: %d %s, want 400 naming what the endpoint takes", q, code, body)
		}
	}
	// A repository that is no OWNER/REPO is refused, as the CLI refuses
	// it, not answered as one that has no release.
	for _, repo := range []string{"nope", "acme/shop/x", "acme/"} {
		for _, endpoint := range []string{"history", "status"} {
			if code, body := get("/api/v1/"+endpoint+"?repository="+repo, "Bearer "+token); code != http.StatusBadRequest || !strings.Contains(body, "OWNER/REPO") {
				t.Errorf("GET /api/v1/%s?repository=%s: %d %s, want 400", endpoint, repo, code, body)
			}
		}
	}
	if code, body := request(t, http.MethodHead, sb.URL()+"/api/v1/history", "Bearer "+token); code != http.StatusOK || body != "" {
		t.Errorf("HEAD /api/v1/history with the token: %d %q, want 200 and no body", code, body)
	}
	if code, _ := get("/api/v1/nothing-here", "Bearer "+token); code != http.StatusNotFound {
		t.Errorf("an unknown path of the API: %d, want 404", code)
	}
	code, body := get("/api/v1/releases/acme/shop/"+sha, "Bearer "+token)
	var rec pipeline.AuditRecord
	if code != http.StatusOK || json.Unmarshal([]byte(body), &rec) != nil || rec.Release.SHA != sha {
		t.Errorf("with the token: %d %s", code, body)
	}
	if code, body := get("/api/v1/history?repository=acme/shop&environment=qa", "Bearer "+token); code != http.StatusOK ||
		strings.TrimSpace(body) != `{"releases":[]}` {
		t.Errorf("history of a repository with nothing deployed to qa: %d %s, want an empty list", code, body)
	}
	if code, body := get("/api/v1/history?repository=acme/nope", "Bearer "+token); code != http.StatusNotFound ||
		!strings.Contains(body, "lastmile has no record of it") {
		t.Errorf("history of a repository lastmile never heard of: %d %s, want 404", code, body)
	}
	if code, body := get("/api/v1/history?limit=5", "Bearer "+token); code != http.StatusOK || !strings.Contains(body, sha) {
		t.Errorf("history with the token: %d %s", code, body)
	}
	if code, _ := get("/api/v1/releases/acme/nope/"+sha, "Bearer "+token); code != http.StatusNotFound {
		t.Errorf("unknown repository with the token: %d", code)
	}
	if code, _ := get("/api/v1/releases/acme/shop/xyz", "Bearer "+token); code != http.StatusBadRequest {
		t.Errorf("bad sha with the token: %d", code)
	}
	if code, body := get("/api/v1/releases/%20/shop/"+sha, "Bearer "+token); code != http.StatusBadRequest || !strings.Contains(body, "OWNER/REPO") {
		t.Errorf("a blank owner with the token: %d %s, want 400", code, body)
	}
	if code, body := get(fmt.Sprintf("/api/v1/releases/acme/shop/%s?release=%d", sha, rec.Release.ID), "Bearer "+token); code != http.StatusOK ||
		!strings.Contains(body, sha) {
		t.Errorf("the release by its ID: %d %s", code, body)
	}
	for _, q := range []string{"release=0", "release=x", "release=-1"} {
		if code, _ := get("/api/v1/releases/acme/shop/"+sha+"?"+q, "Bearer "+token); code != http.StatusBadRequest {
			t.Errorf("?%s: %d, want 400", q, code)
		}
	}
	if code, _ := get(fmt.Sprintf("/api/v1/releases/acme/shop/%s?release=%d", sha, rec.Release.ID+1000), "Bearer "+token); code != http.StatusNotFound {
		t.Errorf("a release that is not of the commit: %d, want 404", code)
	}

	// A deploy log: served, then, once retention pruned it, gone.
	var job int64
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			for _, j := range d.Jobs {
				if j.LogBytes > 0 {
					job = j.ID
				}
			}
		}
	}
	logPath := fmt.Sprintf("/api/v1/jobs/%d/log", job)
	if code, body := get(logPath, "Bearer "+token); code != http.StatusOK || body == "" {
		t.Errorf("deploy log of job %d: %d %q", job, code, body)
	}
	if _, err := sb.App.DB().Prune(context.Background(), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if code, body := get(logPath, "Bearer "+token); code != http.StatusGone || !strings.Contains(body, "pruned by retention") {
		t.Errorf("pruned deploy log: %d %s", code, body)
	}
}

func TestReadAPIIsOffWithoutAToken(t *testing.T) {
	sb, sha := promoted(t, nil)
	for _, auth := range []string{"", "Bearer "} {
		code, body := request(t, http.MethodGet, sb.URL()+"/api/v1/releases/acme/shop/"+sha, auth)
		if code != http.StatusNotFound || strings.Contains(body, sha[:7]) {
			t.Errorf("%q: %d %s", auth, code, body)
		}
	}
}

func TestRetentionPrunesPayloadsButKeepsRecordsAndMetrics(t *testing.T) {
	sb, sha := promoted(t, nil)
	db := sb.App.DB()
	ctx := context.Background()
	before, err := db.MetricsSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recBefore, err := db.Audit(ctx, "acme/shop", sha)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing is older than a day yet.
	if p, err := db.Prune(ctx, time.Now().Add(-24*time.Hour)); err != nil || p.DeliveryBodies+p.JobLogs != 0 {
		t.Fatalf("prune of nothing old: %+v %v", p, err)
	}
	p, err := db.Prune(ctx, time.Now().Add(time.Minute))
	if err != nil || p.DeliveryBodies == 0 || p.JobLogs != 3 {
		t.Fatalf("prune: %+v %v", p, err)
	}
	recAfter, err := db.Audit(ctx, "acme/shop", sha)
	if err != nil {
		t.Fatal(err)
	}
	for i, env := range recAfter.Environments {
		if len(env.Deployments) != len(recBefore.Environments[i].Deployments) ||
			len(env.Deployments[0].Statuses) != len(recBefore.Environments[i].Deployments[0].Statuses) {
			t.Errorf("%s: the record changed", env.Name)
		}
		for _, j := range env.Deployments[0].Jobs {
			if j.LogBytes > 0 && !j.LogPruned {
				t.Errorf("%s: job %d log not marked pruned", env.Name, j.ID)
			}
			if j.LogPruned {
				if _, err := db.JobLog(ctx, j.ID); err == nil || !strings.Contains(err.Error(), "pruned") {
					t.Errorf("job %d log after pruning: %v", j.ID, err)
				}
			}
		}
	}
	after, err := db.MetricsSnapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := json.Marshal(before.Counters)
	b2, _ := json.Marshal(after.Counters)
	h1, _ := json.Marshal(before.Histograms)
	h2, _ := json.Marshal(after.Histograms)
	if !bytes.Equal(b1, b2) || !bytes.Equal(h1, h2) {
		t.Errorf("metrics changed by pruning")
	}
	list, err := db.ListDeliveries(ctx, storageFilterAll())
	if err != nil || len(list) == 0 {
		t.Fatalf("deliveries after pruning: %d %v", len(list), err)
	}
}

// TestASecondProcessReportsTheSameMetrics reads the database of a running
// lastmile from a second store, as a second process (or the same one after a
// restart) would, and compares the delivery metrics with the first one's.
func TestASecondProcessReportsTheSameMetrics(t *testing.T) {
	sb, _ := promoted(t, nil)
	delivery := func(body string) []string {
		var out []string
		for _, line := range strings.Split(body, "\n") {
			for _, name := range []string{"lastmile_deployments_total", "lastmile_deployment_", "lastmile_approval_wait", "lastmile_time_to_restore", "lastmile_last_success", "lastmile_environment_info"} {
				if strings.HasPrefix(line, name) {
					out = append(out, line)
				}
			}
		}
		return out
	}
	first := delivery(get(t, sb.URL()+"/metrics"))
	if len(first) < 20 || !strings.Contains(strings.Join(first, "\n"), `lastmile_deployments_total{environment="production",repository="acme/shop",state="success"} 1`) {
		t.Fatalf("the first process's metrics:\n%s", strings.Join(first, "\n"))
	}
	db2, err := storage.Open(context.Background(), sb.Config.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	srv := httptest.NewServer(metrics.New(db2, db2, "second", slog.New(slog.DiscardHandler)).Handler())
	defer srv.Close()
	second := delivery(get(t, srv.URL))
	if strings.Join(first, "\n") != strings.Join(second, "\n") {
		t.Errorf("the second process reports\n%s\n\nthe first\n%s", strings.Join(second, "\n"), strings.Join(first, "\n"))
	}
}

// A start refused for its database (not a lastmile database, written by a
// newer lastmile, …) leaves nothing beside it: no DB.lock.
func TestRefusedStartLeavesNoLock(t *testing.T) {
	sb := sandbox(t, nil)
	cfg := *sb.Config
	cfg.Listen = "127.0.0.1:0"
	cfg.Database = filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(cfg.Database, []byte("not a database, but my notes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if a, err := New(context.Background(), &cfg, Options{}); err == nil {
		a.db.Close()
		a.unlock(true)
		t.Fatal("serve started on a text file")
	}
	if _, err := os.Stat(cfg.Database + ".lock"); err == nil {
		t.Errorf("a refused start left %s.lock behind", cfg.Database)
	}
	// The lock of an earlier start stays: it was not this one's to remove.
	if err := os.WriteFile(cfg.Database+".lock", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(context.Background(), &cfg, Options{}); err == nil {
		t.Fatal("serve started on a text file")
	}
	if _, err := os.Stat(cfg.Database + ".lock"); err != nil {
		t.Errorf("a refused start removed a lock it did not create: %v", err)
	}
}

func TestOneServePerDatabase(t *testing.T) {
	sb := sandbox(t, nil)
	cfg := *sb.Config
	cfg.Listen = "127.0.0.1:0"
	_, err := New(context.Background(), &cfg, Options{})
	if err == nil || !strings.Contains(err.Error(), "another lastmile serve is using") {
		t.Fatalf("a second serve on the same database: %v", err)
	}
	// Nor through a symbolic link to the file, or to its folder: SQLite
	// opens the file the link points at.
	links := t.TempDir()
	toFile, toDir := filepath.Join(links, "lastmile.db"), filepath.Join(links, "data")
	if err := os.Symlink(sb.Config.Database, toFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(sb.Config.Database), toDir); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{toFile, filepath.Join(toDir, filepath.Base(sb.Config.Database))} {
		cfg.Database = path
		second, err := New(context.Background(), &cfg, Options{})
		if err == nil {
			second.db.Close()
			second.unlock(true)
			t.Errorf("a second serve on the same database through %s started", path)
		} else if !strings.Contains(err.Error(), "another lastmile serve is using") {
			t.Errorf("a second serve through %s: %v", path, err)
		}
	}
	// A link made before its database: SQLite creates the file through it,
	// and the lock is where the file will be.
	data := t.TempDir()
	early := filepath.Join(links, "early.db")
	if err := os.Symlink(filepath.Join(data, "lastmile.db"), early); err != nil {
		t.Fatal(err)
	}
	unlock, err := lockDatabase(early)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDatabase(filepath.Join(data, "lastmile.db")); err == nil {
		t.Error("a second lock on a database through its real path, the first taken through a link made before the file")
	}
	unlock(true)
	// A relative link going up (..) from a folder that is itself a link:
	// up from where that folder really is, as the kernel goes.
	real := t.TempDir()
	for _, dir := range []string{"disk/data", "disk/db"} {
		if err := os.MkdirAll(filepath.Join(real, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(real, "disk/db/lastmile.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../db/lastmile.db", filepath.Join(real, "disk/data/lastmile.db")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(real, "disk/data"), filepath.Join(links, "srv-data")); err != nil {
		t.Fatal(err)
	}
	unlock, err = lockDatabase(filepath.Join(links, "srv-data", "lastmile.db"))
	if err != nil {
		t.Fatalf("lock through a folder link and a relative file link: %v", err)
	}
	_, err = lockDatabase(filepath.Join(real, "disk/db/lastmile.db"))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(real, "disk/db/lastmile.db.lock")) {
		t.Errorf("a second lock through the real path: %v; want refused, naming the lock held", err)
	}
	unlock(true)
	// The read commands still work beside it.
	if code, out, errOut := run(t, sb.Config.Database, "history"); code != 0 {
		t.Errorf("history beside a running serve: exit %d %s%s", code, out, errOut)
	}
}

// /readyz says whether lastmile can work, without telling the internet why
// not (the log does). A sandbox is ready when NewSandbox returns. Its stop
// then fails: the counts it could not flush are lost.
func TestReadyz(t *testing.T) {
	sb, err := NewSandbox(context.Background(), SandboxOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !sb.App.worker.Alive() {
		t.Error("NewSandbox returned before the worker ran")
	}
	get := func() (int, string) {
		resp, err := http.Get(sb.URL() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != http.StatusOK || body != "ready\n" {
		t.Errorf("readyz: %d %q", code, body)
	}
	// A probe may ask with HEAD: the same answers, without a body. (Not
	// /metrics here: a scrape writes the counts this process holds, which
	// the stop below must find unwritten: TestMetricsAnswerHEAD.)
	for _, path := range []string{"/readyz", "/healthz"} {
		if code, body := request(t, http.MethodHead, sb.URL()+path, ""); code != http.StatusOK || body != "" {
			t.Errorf("HEAD %s: %d %q, want 200 and no body", path, code, body)
		}
	}
	if err := sb.App.DB().Close(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != http.StatusServiceUnavailable || body != "database unavailable\n" {
		t.Errorf("readyz with the database closed: %d %q", code, body)
	}
	if code, _ := request(t, http.MethodHead, sb.URL()+"/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("HEAD /readyz with the database closed: %d, want 503", code)
	}
	if err := sb.Close(); err == nil || !strings.Contains(err.Error(), "flush counters at shutdown") {
		t.Errorf("stop with the database closed under it: %v, want the lost counts said", err)
	}
}

// /metrics answers HEAD as GET, as a monitor's probe may ask.
func TestMetricsAnswerHEAD(t *testing.T) {
	sb := sandbox(t, nil)
	if code, body := request(t, http.MethodHead, sb.URL()+"/metrics", ""); code != http.StatusOK || body != "" {
		t.Errorf("HEAD /metrics: %d %q, want 200 and no body", code, body)
	}
}

// Text from outside (here a commit message) reaches the operator's
// terminal escaped: a control sequence in it cannot clear the screen or
// set the title when history, audit or deliveries print it.
func TestTextCommandsEscapeControlSequences(t *testing.T) {
	sb := sandbox(t, nil)
	// The deploy job's final status says, after a newline, what would read
	// as the start of another record.
	forged := "Release #999 of acme/shop at 0000000 (refs/heads/main)"
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{Deploy: func(ctx context.Context, job simulator.JobContext) error {
		gh, err := githubapp.NewTokenClient(job.APIURL, job.Token, nil)
		if err != nil {
			return err
		}
		owner, name, _ := strings.Cut(job.Repository, "/")
		_, _, err = gh.Repositories.CreateDeploymentStatus(ctx, owner, name, job.DeploymentID, &github.DeploymentStatusRequest{
			State: github.String("success"), Description: github.String("deployed\n" + forged + "\r\n\tstate: completed")})
		return err
	}})
	push := sb.Sim.Push(repo, "main", simulator.CommitSpec{Message: "Fix typo\x1b]0;pwned\a\x1b[2J\u009b2J",
		Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	waitFor(t, sb, "test success", func(s *simulator.Simulator) bool { return succeededIn(s, repo, push.After, "test") })
	settle(t, sb)
	db := sb.Config.Database
	for _, args := range [][]string{{"audit", "acme/shop", push.After, "--logs"}, {"history"}, {"deliveries"}} {
		code, out, errOut := run(t, db, args...)
		if code != 0 || strings.ContainsAny(out, "\x1b\a") {
			t.Errorf("%v: exit %d, output with raw control characters:\n%q%s", args, code, out, errOut)
		}
		if args[0] == "audit" && !strings.Contains(out, `Fix typo\x1b]0;pwned\x07\x1b[2J\u009b2J`) {
			t.Errorf("audit does not show the commit title escaped:\n%s", out)
		}
		if args[0] == "audit" && (strings.Contains(out, "\n"+forged) || !strings.Contains(out, `deployed\n`+forged+`\r\n\tstate: completed`)) {
			t.Errorf("audit does not show the status description's newlines escaped on its one line:\n%s", out)
		}
	}
	// JSON: escaped too (encoding/json leaves the C1 controls raw), and
	// the same text once decoded.
	code, out, errOut := run(t, db, "audit", "--json", "acme/shop", push.After)
	var rec pipeline.AuditRecord
	if code != 0 || strings.ContainsAny(out, "\x1b\a\u009b") || json.Unmarshal([]byte(out), &rec) != nil ||
		len(rec.Commits) != 1 || rec.Commits[0].Title != "Fix typo\x1b]0;pwned\a\x1b[2J\u009b2J" {
		t.Errorf("audit --json: exit %d, raw control characters or a different title:\n%q%s", code, out, errOut)
	}
}

// With LASTMILE_ADMIN_LISTEN the webhook's address serves only the webhook
// and health: /metrics and the read API move to the admin address.
func TestAdminAddressServesMetricsAndAPI(t *testing.T) {
	const token = "0123456789abcdef-token"
	sb, sha := promoted(t, func(c *Config) { c.APIToken, c.AdminListen = token, "127.0.0.1:0" })
	admin := "http://" + sb.App.AdminAddr()
	if sb.App.AdminAddr() == "" || admin == sb.URL() {
		t.Fatalf("admin address %q, webhook address %s", sb.App.AdminAddr(), sb.URL())
	}
	release := "/api/v1/releases/acme/shop/" + sha
	for _, tc := range []struct {
		method, url, auth string
		code              int
		has               string
	}{
		// The promotion went through the webhook address, so it works.
		{"GET", sb.URL() + "/healthz", "", http.StatusOK, "ok"},
		{"GET", sb.URL() + "/readyz", "", http.StatusOK, "ready"},
		{"GET", sb.URL() + "/metrics", "", http.StatusNotFound, ""},
		{"GET", sb.URL() + release, "Bearer " + token, http.StatusNotFound, ""},
		{"GET", sb.URL() + "/api/v1/history", "Bearer " + token, http.StatusNotFound, ""},
		{"GET", admin + "/metrics", "", http.StatusOK, `lastmile_deployments_total{environment="production",repository="acme/shop",state="success"} 1`},
		{"GET", admin + release, "Bearer " + token, http.StatusOK, sha},
		{"GET", admin + release, "", http.StatusUnauthorized, ""},
		{"GET", admin + "/readyz", "", http.StatusOK, "ready"},
		{"POST", admin + "/webhook", "", http.StatusNotFound, ""},
	} {
		code, body := request(t, tc.method, tc.url, tc.auth)
		if code != tc.code || !strings.Contains(body, tc.has) {
			t.Errorf("%s %s: %d %.200q, want %d with %q", tc.method, tc.url, code, body, tc.code, tc.has)
		}
	}
}

// request sends method url with an Authorization header (none if auth is
// empty) and returns the answer's status code and body.
func request(t *testing.T, method, url, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// failingWriter takes room bytes, then fails as a full disk does.
type failingWriter struct{ room int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= w.room {
		w.room -= len(p)
		return len(p), nil
	}
	n := w.room
	w.room = 0
	return n, errors.New("write /dev/stdout: no space left on device")
}

// A read command whose output did not all reach stdout fails, whichever
// way it prints: a script keeping `lastmile audit … > record.txt` must not
// take a truncated record for a whole one.
func TestReadCommandsFailWhenOutputIsLost(t *testing.T) {
	sb, sha := promoted(t, nil)
	db := sb.Config.Database
	getenv := func(k string) string {
		if k == "LASTMILE_DATABASE" {
			return db
		}
		return ""
	}
	for _, args := range [][]string{
		{"audit", "acme/shop", sha}, {"audit", "acme/shop", sha, "--logs"}, {"audit", "--json", "acme/shop", sha},
		{"history"}, {"history", "--env", "qa"}, {"deliveries"}, {"version"}, {"help"}, {"audit", "--help"},
	} {
		code, out, errOut := run(t, db, args...)
		if code != 0 || out == "" {
			t.Errorf("%v: exit %d, stdout %q, %s", args, code, out, errOut)
		}
		// No room at all, and room for half of it.
		for _, room := range []int{0, len(out) / 2} {
			var errb bytes.Buffer
			code := Main(context.Background(), args, getenv, &failingWriter{room: room}, &errb)
			if code != 1 || !strings.Contains(errb.String(), "no space left on device") {
				t.Errorf("%v with %d of %d bytes of room on stdout: exit %d, stderr %q; want exit 1 and the write error", args, room, len(out), code, errb.String())
			}
		}
	}
}

// A kept log that no longer decompresses (the file damaged, or changed by
// hand) is said where the log would be, and audit fails once the rest of
// the record is printed; the read API answers 500 saying so.
func TestAuditSaysADamagedLog(t *testing.T) {
	const token = "0123456789abcdef-token"
	sb, sha := promoted(t, func(c *Config) { c.APIToken = token })
	db := sb.Config.Database
	conn, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var job int64
	if err := conn.QueryRow(`SELECT job_id FROM job_logs WHERE log IS NOT NULL AND NOT missing ORDER BY job_id LIMIT 1`).Scan(&job); err != nil {
		t.Fatal(err)
	}
	// A gzip stream cut short: its header reads, its body does not.
	if _, err := conn.Exec(`UPDATE job_logs SET log = substr(log, 1, 20) WHERE job_id = ?`, job); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("job %d: the kept log is damaged and cannot be read", job)
	code, out, errOut := run(t, db, "audit", "--logs", "acme/shop", sha)
	if code != 1 || !strings.Contains(out, "Release #1 of acme/shop") || !strings.Contains(out, want) ||
		!strings.Contains(errOut, "the record is printed, but not all of its logs: "+want) {
		t.Errorf("audit --logs with a damaged log: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, db, "audit", "--json", "--logs", "acme/shop", sha)
	var rec pipeline.AuditRecord
	if code != 1 || json.Unmarshal([]byte(out), &rec) != nil || !strings.Contains(out, `"log_error": "`+want) || !strings.Contains(errOut, want) {
		t.Errorf("audit --json --logs with a damaged log: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	// Without --logs the record is whole: the log's size is all it shows.
	if code, _, errOut := run(t, db, "audit", "acme/shop", sha); code != 0 {
		t.Errorf("audit without --logs: exit %d, %s", code, errOut)
	}
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/jobs/%d/log", sb.URL(), job), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), want) {
		t.Errorf("GET the damaged log: %d %s; want 500 saying %q", resp.StatusCode, body, want)
	}
}
