package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

const demoConfig = `# .github/lastmile.yml
environments:
  - name: test
  - name: staging
  - name: production
`

// demoWrapGitHub is the demo's SandboxOptions.WrapGitHub: nil, but TestDemo
// checks the demo's traffic with GitHub with it.
var demoWrapGitHub func(http.Handler) http.Handler

// demo runs lastmile end to end against the GitHub simulator, in this
// process: a push of three commits to main goes through test, staging and
// production; simulated reviewers approve staging and production; the
// simulated workflow's deploy step runs the lastmile Action's own code.
func demo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile demo", `Usage: lastmile demo [--dir DIR] [--keep-running] [--verbose]

Runs lastmile, its SQLite store and a simulated GitHub in one process, and
promotes a push through test, staging and production. Nothing leaves this
machine. The database stays in --dir (default: a new temporary folder).`, stderr)
	dir := fs.String("dir", "", "folder for the demo's database (default: a new temporary folder)")
	keep := fs.Bool("keep-running", false, "keep lastmile running afterwards, to browse /metrics and the API (Ctrl-C stops)")
	verbose := fs.Bool("verbose", false, "print lastmile's log")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	// Given empty (--dir "$DIR", DIR unset), it is refused as --database
	// is: a new temporary folder would leave the database where the user
	// does not look for it.
	if given(fs, "dir") && strings.TrimSpace(*dir) == "" {
		fmt.Fprintf(stderr, "%s: --dir: must not be empty (leave the flag out for a new temporary folder)\n", fs.Name())
		return errUsage
	}
	// The simulated workflow runs the Action's deploy step, which runs its
	// command as a runner does, with bash.
	if _, err := exec.LookPath("bash"); err != nil {
		return fmt.Errorf("the demo's deploy step runs its command with bash, as GitHub's runners do: %w", err)
	}
	if *dir == "" {
		d, err := os.MkdirTemp("", "lastmile-demo-")
		if err != nil {
			return err
		}
		*dir = d
	} else if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(*dir, "lastmile.db")); err == nil {
		return fmt.Errorf("%s already holds a lastmile.db: give the demo an empty folder", *dir)
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	// Random: with --keep-running, the API answers on 127.0.0.1 until stopped.
	token := "demo-api-token-" + rand.Text()
	sb, err := NewSandbox(ctx, SandboxOptions{Dir: *dir, Logger: log, Configure: func(c *Config) { c.APIToken = Secret(token) }, WrapGitHub: demoWrapGitHub})
	if err != nil {
		return err
	}
	defer sb.Close()

	const repo = "acme/shop"
	sim := sb.Sim
	inst := sim.CreateInstallation("acme", "Organization")
	sim.CreateRepo(inst, repo, simulator.RepoOptions{})
	sim.SetEnvironment(repo, "staging", simulator.EnvironmentOptions{Reviewers: []string{"alice"}, Review: simulator.AutoApprove("alice", "staging looks right")})
	sim.SetEnvironment(repo, "production", simulator.EnvironmentOptions{Reviewers: []string{"bob"}, Review: simulator.AutoApprove("bob", "ship it")})
	// The example workflow's: its jobs run for lastmile's deployments only.
	sim.SetWorkflow(repo, simulator.WorkflowOptions{JobsIf: "lastmile", Deploy: func(ctx context.Context, job simulator.JobContext) error {
		return runAction(ctx, *dir, demoCommand, job)
	}})

	fmt.Fprintf(stdout, "lastmile demo — everything runs on 127.0.0.1; the database is %s\n\n", sb.Config.Database)
	fmt.Fprintf(stdout, "GitHub (simulated): %s, with required reviewers on staging (alice) and production (bob)\n", repo)
	now := time.Now()
	push := sim.Push(repo, "main",
		simulator.CommitSpec{Message: "Add lastmile's pipeline", Time: now.Add(-3 * time.Hour), Author: simulator.Author{Name: "Dana", Login: "dana"},
			Files: map[string]string{".github/lastmile.yml": demoConfig}},
		simulator.CommitSpec{Message: "Checkout: accept gift cards", Time: now.Add(-90 * time.Minute), Author: simulator.Author{Name: "Eli", Login: "eli"},
			Files: map[string]string{"checkout.txt": "gift cards"}},
		simulator.CommitSpec{Message: "Fix rounding in totals", Time: now.Add(-20 * time.Minute), Author: simulator.Author{Name: "Dana", Login: "dana"},
			Files: map[string]string{"totals.txt": "rounded"}},
	)
	fmt.Fprintf(stdout, "pushed 3 commits to main; head %s\n", push.After[:7])

	// Until the release completes or stops (a failed deploy, a rejection):
	// a release that stops in test is said at once, not after the minute.
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	rec, err := waitForRecord(waitCtx, sb, repo, push.After)
	if err != nil && ctx.Err() != nil {
		// Interrupted (Ctrl-C): no timeout to blame.
		return fmt.Errorf("interrupted before the release finished; the database stays in %s", sb.Config.Database)
	}
	if err != nil {
		return fmt.Errorf("the release did not finish within a minute: %w (run with --verbose to see why)", err)
	}
	printDemoSummary(stdout, rec)
	if rec.Release.State != pipeline.ReleaseCompleted {
		printDemoNextSteps(stdout, demoNextSteps{self: self(getenv), database: sb.Config.Database, repo: repo, sha: push.After, stopped: true})
		return fmt.Errorf("the release did not reach production: %s (run with --verbose to see lastmile's log)", rec.Release.StopReason)
	}

	metricsOut, _ := scrapeDeployments(ctx, sb.URL())
	fmt.Fprintf(stdout, "\nFrom /metrics:\n%s", metricsOut)
	printDemoNextSteps(stdout, demoNextSteps{self: self(getenv), database: sb.Config.Database, repo: repo, sha: push.After, keep: *keep, url: sb.URL(), token: token})
	if !*keep {
		return nil
	}
	<-ctx.Done()
	fmt.Fprintf(stdout, "\nstopping lastmile and the simulated GitHub; the database stays in %s\n", sb.Config.Database)
	return nil
}

// demoNextSteps is what the demo's closing lines name: the command that ran
// it (self), its database, the release, and, with --keep-running, where
// lastmile answers and the read API's token.
type demoNextSteps struct {
	self, database, repo, sha string
	keep                      bool
	url, token                string
	stopped                   bool // the release stopped: nothing more to browse
}

// printDemoNextSteps prints the commands to run next, each on a line of its
// own under a line that says what it shows, so that a command line pasted
// whole into a shell runs as printed (a description after the command, even
// as a # comment, would reach the argument list where a shell does not take
// comments interactively, as zsh by default). Every word that needs it is
// quoted for a POSIX shell.
func printDemoNextSteps(w io.Writer, n demoNextSteps) {
	db := shellWord(n.database)
	fmt.Fprintf(w, `
Where to look:
  the full record, with reviews and deploy logs (add --logs to print the logs):
    %[1]s audit --database %[2]s %[3]s %[4]s
  the releases recorded:
    %[1]s history --database %[2]s
  what each environment runs now:
    %[1]s status --database %[2]s
`, n.self, db, shellWord(n.repo), shellWord(n.sha[:7]))
	if n.stopped {
		return
	}
	if !n.keep {
		fmt.Fprintf(w, `  to browse /metrics and the read API, run the demo again, kept running (a new database; it prints the curl commands):
    %s demo --keep-running
`, n.self)
		return
	}
	fmt.Fprintf(w, `
lastmile keeps running (Ctrl-C stops it):
  the metrics:
    curl %s
  the release's record from the read API:
    curl -H %s %s
`, shellWord(n.url+"/metrics"), shellWord("Authorization: Bearer "+n.token), shellWord(n.url+"/api/v1/releases/"+n.repo+"/"+n.sha))
}

// demoCommand is the deploy command of the demo's workflow.
const demoCommand = `echo "deploying $LASTMILE_SHA to $LASTMILE_ENVIRONMENT"; echo "done"`

// runAction runs the lastmile Action's deploy step as a runner would, with
// the simulated job's token, event payload and log, and command as the
// deploy command.
func runAction(ctx context.Context, dir, command string, job simulator.JobContext) error {
	event := filepath.Join(dir, fmt.Sprintf("event-%d.json", job.JobID))
	if err := os.WriteFile(event, job.Event, 0o600); err != nil {
		return err
	}
	defer os.Remove(event)
	vars := map[string]string{
		"GITHUB_TOKEN":                                  job.Token,
		"GITHUB_API_URL":                                job.APIURL,
		"GITHUB_SERVER_URL":                             "https://github.com",
		"GITHUB_REPOSITORY":                             job.Repository,
		"GITHUB_RUN_ID":                                 strconv.FormatInt(job.RunID, 10),
		"GITHUB_RUN_ATTEMPT":                            strconv.Itoa(max(job.RunAttempt, 1)),
		"GITHUB_SHA":                                    job.SHA,
		"GITHUB_EVENT_NAME":                             job.EventName,
		"GITHUB_EVENT_PATH":                             event,
		action.InputEnvName(action.InputMode):           string(action.ModeDeploy),
		action.InputEnvName(action.InputCommand):        command,
		action.InputEnvName(action.InputJobID):          strconv.FormatInt(job.JobID, 10),
		action.InputEnvName(action.InputEnvironmentURL): "https://" + job.Environment + ".shop.example.com",
	}
	_, err := action.Run(ctx, action.Env{
		Getenv:  func(k string) string { return vars[k] },
		Environ: func() []string { return []string{"PATH=" + os.Getenv("PATH")} },
		Stdout:  job.Log,
	})
	return err
}

// waitForRecord waits until lastmile has recorded the release's outcome and
// handled every delivery GitHub sent about it (the last deploy log comes
// after the release completes).
func waitForRecord(ctx context.Context, sb *Sandbox, repo, sha string) (*pipeline.AuditRecord, error) {
	for {
		rec, err := sb.App.DB().Audit(ctx, repo, sha)
		if err == nil && rec.Release.State != pipeline.ReleaseActive {
			stats, err := sb.App.DB().InboxStats(ctx)
			if err != nil {
				return nil, err
			}
			if stats[pipeline.DeliveryPending] == 0 && sb.Sim.Idle() {
				return sb.App.DB().Audit(ctx, repo, sha)
			}
		}
		if err != nil && !errors.Is(err, pipeline.ErrNotFound) {
			return nil, err
		}
		wait, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_ = sb.Sim.WaitFor(wait, func(*simulator.Simulator) bool { return false })
		cancel()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("lastmile did not finish recording the release: %w", ctx.Err())
		}
	}
}

func printDemoSummary(w io.Writer, rec *pipeline.AuditRecord) {
	r := rec.Release
	fmt.Fprintf(w, "\nRelease #%d (%s) is %s", r.ID, r.SHA[:7], r.State)
	if r.StopReason != "" {
		fmt.Fprintf(w, ": %s", r.StopReason)
	}
	fmt.Fprintln(w)
	var prodSuccess time.Time
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			if d.Origin != pipeline.OriginLastmile {
				continue
			}
			line := fmt.Sprintf("  %-11s deployment %d: %s", env.Name, d.GitHubID, d.State)
			if !d.TerminalAt.IsZero() {
				line += fmt.Sprintf(" in %s", d.TerminalAt.Sub(d.CreatedAt).Round(time.Millisecond))
			}
			for _, rv := range d.Reviews {
				if rv.Action == pipeline.ReviewApproved || rv.Action == pipeline.ReviewRejected {
					line += fmt.Sprintf("; %s by %s (%q)", rv.Action, rv.Actor, rv.Comment)
				}
			}
			for _, j := range d.Jobs {
				switch {
				case j.LogMissing:
					line += "; GitHub had no deploy log"
				case j.LogBytes > 0:
					line += fmt.Sprintf("; deploy log kept (%d bytes)", j.LogBytes)
				}
			}
			fmt.Fprintln(w, line)
			if env.Production && d.State == pipeline.DeploymentSuccess {
				prodSuccess = d.TerminalAt
			}
		}
	}
	if prodSuccess.IsZero() {
		return
	}
	fmt.Fprintln(w, "\nLead time to production, per commit (commit to successful production deployment):")
	for _, c := range rec.Commits {
		fmt.Fprintf(w, "  %s  %-30s %s\n", c.SHA[:7], c.Title, prodSuccess.Sub(c.Timestamp).Round(time.Second))
	}
}

// scrapeDeployments returns the delivery metric lines of /metrics.
func scrapeDeployments(ctx context.Context, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, line := range strings.Split(string(body), "\n") {
		if (strings.HasPrefix(line, "lastmile_deployments_total{") && !strings.HasSuffix(line, " 0")) ||
			strings.HasPrefix(line, "lastmile_deployment_lead_time_seconds_count{") ||
			strings.HasPrefix(line, "lastmile_approval_wait_seconds_count{") && !strings.HasSuffix(line, " 0") {
			b.WriteString("  " + line + "\n")
		}
	}
	return b.String(), nil
}
