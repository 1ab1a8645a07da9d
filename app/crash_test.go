package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// crashEnv starts the simulator and returns the environment of a lastmile
// process configured against it, with a database in dir.
func crashEnv(t *testing.T, dir string) (*simulator.Simulator, []string) {
	t.Helper()
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	sim := simulator.New(simulator.Options{AppID: 7, WebhookSecret: hex.EncodeToString(secret), Wrap: oasvalidate.Wrap(t)})
	apiURL, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim, []string{
		"LASTMILE_DATABASE=" + dir + "/lastmile.db",
		"LASTMILE_WEBHOOK_SECRET=" + sim.WebhookSecret(),
		"LASTMILE_APP_ID=7",
		"LASTMILE_PRIVATE_KEY=" + string(sim.AppPrivateKeyPEM()),
		"LASTMILE_GITHUB_URL=" + apiURL,
		"LASTMILE_REDELIVERY_INTERVAL=1s",
	}
}

// pushDelivery is a signed push delivery, as GitHub would send it.
type pushDelivery struct {
	id, repo, sha string
	body          []byte
}

func makePush(t *testing.T, repoID, inst int64, repo, before string, res simulator.PushResult) pushDelivery {
	t.Helper()
	owner, name, _ := strings.Cut(repo, "/")
	var commits []map[string]any
	for _, sha := range res.Commits {
		commits = append(commits, map[string]any{
			"id": sha, "message": "change " + sha[:7], "timestamp": time.Now().UTC().Format(time.RFC3339), "distinct": true,
			"author": map[string]any{"name": "Dev", "email": "dev@example.com", "username": "dev"},
		})
	}
	body, err := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "before": before, "after": res.After, "created": false, "deleted": false, "forced": false,
		"commits": commits, "head_commit": commits[len(commits)-1],
		"pusher":       map[string]any{"name": "dev", "email": "dev@example.com"},
		"repository":   map[string]any{"id": repoID, "name": name, "full_name": repo, "owner": map[string]any{"login": owner}, "default_branch": "main"},
		"installation": map[string]any{"id": inst},
		"sender":       map[string]any{"login": "dev"},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return pushDelivery{id: hex.EncodeToString(id), repo: repo, sha: res.After, body: body}
}

// TestKilledUnderLoadLosesNothing sends pushes from 16 connections, kills
// lastmile with SIGKILL halfway, restarts it, and checks that every delivery
// answered 2xx was kept and handled, and that its effects happened once:
// one release per push (or, for a push that arrived after a newer one, a
// late push recognised as such), at most one GitHub deployment per release
// and environment, and each repository's newest release in production.
func TestKilledUnderLoadLosesNothing(t *testing.T) {
	dir := t.TempDir()
	sim, env := crashEnv(t, dir)
	const repos, pushesPerRepo = 4, 20
	inst := sim.CreateInstallation("acme", "Organization")
	perRepo := make([][]pushDelivery, repos)
	for r := range repos {
		repo := fmt.Sprintf("acme/svc%d", r)
		repoID := sim.CreateRepo(inst, repo, simulator.RepoOptions{})
		sim.SetWorkflow(repo, simulator.WorkflowOptions{})
		before := sim.Branch(repo, "main")
		res := sim.PushSilently(repo, "main", simulator.CommitSpec{Message: "Enrol", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
		perRepo[r] = append(perRepo[r], makePush(t, repoID, inst, repo, before, res))
		for i := 1; i < pushesPerRepo; i++ {
			before = res.After
			res = sim.PushSilently(repo, "main", simulator.CommitSpec{Message: fmt.Sprintf("change %d", i), Files: map[string]string{"v": fmt.Sprint(i)}})
			perRepo[r] = append(perRepo[r], makePush(t, repoID, inst, repo, before, res))
		}
	}
	// The repositories' pushes interleave, as they would from many teams.
	var deliveries []pushDelivery
	for i := range pushesPerRepo {
		for r := range repos {
			deliveries = append(deliveries, perRepo[r][i])
		}
	}

	p := startServe(t, env)
	sim.SetWebhookURL("http://" + p.addr + "/webhook")
	var (
		mu       sync.Mutex
		accepted = map[string]pushDelivery{}
		answered atomic.Int64
		next     atomic.Int64
	)
	client := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(deliveries) {
					return
				}
				d := deliveries[i]
				req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/webhook", bytes.NewReader(d.body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-GitHub-Event", "push")
				req.Header.Set("X-GitHub-Delivery", d.id)
				req.Header.Set("X-Hub-Signature-256", githubapp.SignatureHeader([]byte(sim.WebhookSecret()), d.body))
				resp, err := client.Do(req)
				if err != nil {
					return // the process is gone: GitHub would record a failed delivery
				}
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					mu.Lock()
					accepted[d.id] = d
					mu.Unlock()
					if answered.Add(1) == int64(len(deliveries)/2) {
						p.kill()
					}
				}
			}
		}()
	}
	wg.Wait()
	p.kill()
	if n := len(accepted); n < len(deliveries)/2 {
		t.Fatalf("only %d deliveries answered before the kill", n)
	}
	t.Logf("%d of %d deliveries were answered 2xx before SIGKILL", len(accepted), len(deliveries))

	restarted := time.Now()
	p = startServe(t, env)
	sim.SetWebhookURL("http://" + p.addr + "/webhook")
	db, err := storage.OpenExisting(context.Background(), dir+"/lastmile.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitDrained(t, sim, db, p)
	t.Logf("drained %v after the restart; the simulator sent %d webhooks", time.Since(restarted).Round(time.Millisecond), len(sim.Deliveries()))

	for id, d := range accepted {
		got, err := db.GetDelivery(context.Background(), id)
		if err != nil {
			t.Errorf("delivery %s answered 2xx but not in the inbox: %v", id, err)
			continue
		}
		if got.State != pipeline.DeliveryDone {
			t.Errorf("delivery %s: %s (%s)", id, got.State, got.LastError)
		}
		// The connections race: a push may arrive after a newer one of its
		// repository, and is then recognised as late, not deployed.
		if _, err := db.Audit(context.Background(), d.repo, d.sha); err != nil && !strings.Contains(got.Note, "not deployed backwards") {
			t.Errorf("push %s of %s: no release (%v), and not recognised as late: %q", d.sha[:7], d.repo, err, got.Note)
		}
	}
	checkOneDeploymentPerStage(t, sim, repos)
	for r := range repos {
		repo := fmt.Sprintf("acme/svc%d", r)
		hist, err := db.History(context.Background(), storage.HistoryFilter{Repository: repo, Limit: 1})
		if err != nil || len(hist) != 1 {
			t.Fatalf("%s: history %v %v", repo, hist, err)
		}
		if rel := hist[0].Release; rel.State != pipeline.ReleaseCompleted {
			t.Errorf("%s: newest release %s is %s (%s %s)", repo, rel.SHA[:7], rel.State, rel.StopKind, rel.StopReason)
		}
	}
}

// waitDrained waits until lastmile has nothing pending, the simulator has
// nothing to send or play, and every webhook the simulator could not
// deliver while lastmile was down is in lastmile's inbox: redelivered
// (lastmile's redelivery asks for them one at a time, a second apart), or
// stored before the kill cut the answer.
func waitDrained(t *testing.T, sim *simulator.Simulator, db *storage.DB, p *proc) {
	t.Helper()
	undelivered := func() int {
		ok := map[string]bool{}
		for _, d := range sim.Deliveries() {
			ok[d.GUID] = ok[d.GUID] || d.Status == "OK"
		}
		n := 0
		for guid, delivered := range ok {
			if delivered {
				continue
			}
			if _, err := db.GetDelivery(context.Background(), guid); errors.Is(err, storage.ErrNotFound) {
				n++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		return n
	}
	deadline := time.Now().Add(90 * time.Second)
	for stable := 0; stable < 2; {
		if time.Now().After(deadline) {
			stats, _ := db.InboxStats(context.Background())
			t.Fatalf("not drained: inbox %v, simulator idle %v, %d webhooks never delivered\n%s", stats, sim.Idle(), undelivered(), p.logs)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_ = sim.WaitIdle(ctx)
		cancel()
		stats, err := db.InboxStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if stats[pipeline.DeliveryPending] == 0 && sim.Idle() && undelivered() == 0 {
			stable++ // twice in a row: what the last delivery set off is in too
		} else {
			stable = 0
		}
		// Let the worker and the redelivery poller move on before looking again.
		ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
		_ = sim.WaitFor(ctx, func(*simulator.Simulator) bool { return false })
		cancel()
	}
	dead, _ := db.ListDeliveries(context.Background(), storage.DeliveryFilter{State: pipeline.DeliveryDead})
	for _, d := range dead {
		t.Errorf("dead delivery %s %s: %s", d.ID, d.Event, d.LastError)
	}
}

// checkOneDeploymentPerStage checks that GitHub has at most one deployment
// per (release, environment) of lastmile's.
func checkOneDeploymentPerStage(t *testing.T, sim *simulator.Simulator, repos int) {
	t.Helper()
	for r := range repos {
		repo := fmt.Sprintf("acme/svc%d", r)
		seen := map[string]int64{}
		for _, d := range sim.Deployments(repo) {
			m, ok := pipeline.ParseMarker(d.Payload)
			if !ok {
				continue
			}
			key := fmt.Sprintf("release %d %s", m.Release, m.Stage)
			if prev, dup := seen[key]; dup {
				t.Errorf("%s: two GitHub deployments (%d, %d) for %s", repo, prev, d.ID, key)
			}
			seen[key] = d.ID
		}
	}
}

// TestKilledMidPromotion kills lastmile after GitHub created the staging
// deployment but before lastmile heard back: after a restart there is still
// exactly one deployment per environment, and the release completes.
func TestKilledMidPromotion(t *testing.T) {
	dir := t.TempDir()
	sim, env := crashEnv(t, dir)
	inst := sim.CreateInstallation("acme", "Organization")
	const repo = "acme/shop"
	sim.CreateRepo(inst, repo, simulator.RepoOptions{})
	sim.SetEnvironment(repo, "test", simulator.EnvironmentOptions{Reviewers: []string{"alice"}, Review: simulator.Manual()})
	sim.SetWorkflow(repo, simulator.WorkflowOptions{})

	p := startServe(t, env)
	sim.SetWebhookURL("http://" + p.addr + "/webhook")
	push := sim.Push(repo, "main", simulator.CommitSpec{Message: "Enrol", Files: map[string]string{".github/lastmile.yml": threeEnvs}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := sim.WaitFor(ctx, func(s *simulator.Simulator) bool { return len(s.PendingReviews(repo)) == 1 }); err != nil {
		t.Fatalf("test deployment never waited for review: %v\n%s", err, p.logs)
	}
	// The next deployment creation (staging) is applied, then its answer
	// hangs until the process dies.
	sim.InjectFault(simulator.Fault{Kind: simulator.FaultAppliedLost, Method: "POST", Path: "/repos/{o}/{r}/deployments", Delay: time.Minute})
	pending := sim.PendingReviews(repo)[0]
	if err := sim.Approve(repo, pending.RunID, pending.Environment, "alice", "ok"); err != nil {
		t.Fatal(err)
	}
	if err := sim.WaitFor(ctx, func(s *simulator.Simulator) bool {
		for _, r := range s.Requests() {
			if r.Fault && r.Method == "POST" && r.AppliedStatus == http.StatusCreated {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("staging deployment never created: %v\n%s", err, p.logs)
	}
	p.kill()
	if n := len(deploymentsInEnv(sim, repo, push.After, "staging")); n != 1 {
		t.Fatalf("GitHub has %d staging deployments before the restart", n)
	}

	p = startServe(t, env)
	sim.SetWebhookURL("http://" + p.addr + "/webhook")
	if err := sim.WaitFor(ctx, func(s *simulator.Simulator) bool {
		for _, d := range deploymentsInEnv(s, repo, push.After, "production") {
			if d.State() == "success" {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("release never reached production after the restart: %v\n%s", err, p.logs)
	}
	db, err := storage.OpenExisting(context.Background(), dir+"/lastmile.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitDrained(t, sim, db, p)
	if !strings.Contains(p.logs.String(), "recovered deployment created by an earlier attempt") {
		t.Errorf("the restarted lastmile did not recover the staging deployment from GitHub\n%s", p.logs)
	}
	for _, e := range []string{"test", "staging", "production"} {
		if n := len(deploymentsInEnv(sim, repo, push.After, e)); n != 1 {
			t.Errorf("%s: %d deployments on GitHub, want exactly 1", e, n)
		}
	}
	rec, err := db.Audit(context.Background(), repo, push.After)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Release.State != pipeline.ReleaseCompleted {
		t.Errorf("release %s: %s %s", rec.Release.State, rec.Release.StopKind, rec.Release.StopReason)
	}
}

func deploymentsInEnv(s *simulator.Simulator, repo, sha, env string) []simulator.Deployment {
	var out []simulator.Deployment
	for _, d := range s.Deployments(repo) {
		if d.SHA == sha && d.Environment == env {
			out = append(out, d)
		}
	}
	return out
}
