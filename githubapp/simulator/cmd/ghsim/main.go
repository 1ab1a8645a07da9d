// Command ghsim runs the GitHub simulator as a process, to try a real
// `lastmile serve` by hand without GitHub: it serves GitHub's REST API on a
// loopback address, writes the App's private key to a file, installs the
// App on an organisation with a repository that is enrolled (its
// .github/lastmile.yml lists the environments), has an `on: deployment`
// workflow and those environments, and delivers signed webhooks to
// lastmile. POST /_ghsim/push pushes a commit, which lastmile makes a
// release. `ghsim -h` says how to start lastmile against it; so does ghsim
// itself when it starts, with the values to use.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

const usage = `Usage: ghsim [flags]

ghsim is a simulated GitHub on 127.0.0.1, to try a real lastmile serve by
hand. It serves GitHub's REST API, writes the App's private key to a file,
installs the App on an organisation whose repository (-repo, acme/shop) is
enrolled: its .github/lastmile.yml lists the environments (test, staging,
production) and it has an on: deployment workflow whose deploy job succeeds.
It delivers signed webhooks to lastmile (-webhook-url), and pushes a commit
to the repository's main branch at each POST /_ghsim/push: lastmile makes it
a release and deploys it to each environment in turn.

From the lastmile repository, in three terminals:

  1. go run ./githubapp/simulator/cmd/ghsim
     It prints the settings for lastmile: an export line to paste.

  2. Paste that export line, then: go run ./cmd/lastmile serve
     (lastmile listens on 127.0.0.1:8080, where ghsim delivers webhooks.)

  3. Paste the export line too, then push a commit and look at the release:
       curl -X POST http://127.0.0.1:PORT/_ghsim/push
       go run ./cmd/lastmile history

POST /_ghsim/push takes, as query or form values, repo (one of -repo; the
first by default), branch (default: main) and message. It is ghsim's own
control, not GitHub's API, and answers only to loopback addresses.

POST /_ghsim/installation does to the App's installation what an
organisation owner can do on GitHub, with the webhooks GitHub sends:
action=suspend, unsuspend or uninstall, or action=remove with repo (the
repository removed from the installation); by (default: octocat) names
who did it. What the installation cannot take as it stands (a suspension
twice, an unsuspension while active, a repository removed twice) is
answered 409 with why, and changes nothing. For example:
       curl -X POST -d action=suspend http://127.0.0.1:PORT/_ghsim/installation

With -approve-as LOGIN, production has LOGIN as its required reviewer, who
approves each deployment at once (the audit record shows the review). No
reviewer otherwise: every environment is ungated.

Flags:`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		stop()
		switch {
		case errors.Is(err, flag.ErrHelp): // -h: the usage is printed
			return
		case errors.Is(err, errUsage):
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "ghsim:", err)
		os.Exit(1)
	}
}

// errUsage is a wrong command line, already explained on stderr.
var errUsage = errors.New("usage")

// envName is what ghsim accepts as an environment's name: plain enough to
// be written into YAML and a shell command as it is.
var envName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// run starts the simulator as the flags say, reports on stdout, calls
// ready (if not nil) once it serves, and stops when ctx ends. Help asked
// for goes to stdout, a wrong command line to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(*simulator.Simulator)) error {
	fs := flag.NewFlagSet("ghsim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address of the REST API (and of POST /_ghsim/push)")
	appID := fs.Int64("app-id", 1, "the App's ID")
	hookURL := fs.String("webhook-url", "http://127.0.0.1:8080/webhook", "where webhooks are delivered: lastmile's POST /webhook")
	secret := fs.String("webhook-secret", "", "the webhook secret (default: a new random one, printed)")
	keyOut := fs.String("key-out", "", "file to write the App's private key (PEM) to (default: app.pem in a new temporary folder)")
	owner := fs.String("owner", "acme", "organisation the App is installed on")
	repos := fs.String("repo", "acme/shop", "comma-separated repositories to create, each of -owner")
	envs := fs.String("environments", "test,staging,production", "comma-separated environments of each repository, in promotion order (its .github/lastmile.yml)")
	reviewer := fs.String("approve-as", "", "if set, production needs this reviewer, who approves at once")
	var printed bytes.Buffer
	fs.SetOutput(&printed)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			stdout.Write(printed.Bytes())
			return err
		}
		stderr.Write(printed.Bytes())
		return errUsage
	}
	usageError := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "ghsim: "+format+"\n", a...)
		return errUsage
	}
	if fs.NArg() > 0 {
		return usageError("unexpected arguments: %s (see ghsim -h)", strings.Join(fs.Args(), " "))
	}
	var repoNames []string
	for _, r := range strings.Split(*repos, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		o, name, ok := strings.Cut(r, "/")
		if !ok || !strings.EqualFold(o, *owner) || !envName.MatchString(name) {
			return usageError("-repo %q: give repositories as %s/NAME (the App is installed on -owner %s)", r, *owner, *owner)
		}
		repoNames = append(repoNames, r)
	}
	var envNames []string
	for _, e := range strings.Split(*envs, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if !envName.MatchString(e) {
			return usageError("-environments: %q: use letters, digits, '.', '_' and '-'", e)
		}
		envNames = append(envNames, e)
	}
	if len(repoNames) == 0 || len(envNames) == 0 {
		return usageError("give at least one repository (-repo) and one environment (-environments)")
	}
	hook, err := url.Parse(*hookURL)
	if err != nil || (hook.Scheme != "http" && hook.Scheme != "https") || hook.Host == "" {
		return usageError("-webhook-url %q: give lastmile's webhook URL, such as http://127.0.0.1:8080/webhook", *hookURL)
	}
	if *secret == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		*secret = hex.EncodeToString(b)
	}
	if *keyOut == "" {
		dir, err := os.MkdirTemp("", "ghsim-")
		if err != nil {
			return err
		}
		*keyOut = filepath.Join(dir, "app.pem")
	}
	if abs, err := filepath.Abs(*keyOut); err == nil {
		*keyOut = abs
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	api := "http://" + ln.Addr().String() + "/"
	sim := simulator.New(simulator.Options{AppID: *appID, WebhookSecret: *secret, WebhookURL: *hookURL})
	sim.SetURL(api)
	defer sim.Close()
	if err := os.WriteFile(*keyOut, sim.AppPrivateKeyPEM(), 0o600); err != nil {
		ln.Close()
		return err
	}
	inst := sim.CreateInstallation(*owner, "Organization")
	config := lastmileConfig(envNames)
	for _, repo := range repoNames {
		sim.CreateRepo(inst, repo, simulator.RepoOptions{Files: map[string]string{
			"README.md":            "# " + repo + "\n",
			".github/lastmile.yml": config,
		}})
		sim.SetWorkflow(repo, simulator.WorkflowOptions{JobsIf: "lastmile"}) // as action/examples/deploy.yml
		for _, env := range envNames {
			opts := simulator.EnvironmentOptions{}
			if env == "production" && *reviewer != "" {
				opts = simulator.EnvironmentOptions{Reviewers: []string{*reviewer}, Review: simulator.AutoApprove(*reviewer, "approved by ghsim")}
			}
			sim.SetEnvironment(repo, env, opts)
		}
	}

	out := &lockedWriter{w: stdout}
	mux := http.NewServeMux()
	mux.Handle("POST /_ghsim/push", &pusher{sim: sim, repos: repoNames, out: out})
	mux.Handle("POST /_ghsim/installation", &installer{sim: sim, id: inst, account: *owner, repos: repoNames, out: out})
	mux.Handle("/", sim.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		// More than 5 s: net/http counts a connection that has sent no
		// request yet as active for its first 5 s, and Shutdown waits for it.
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	printStart(out, startInfo{api: api, appID: *appID, installation: inst, owner: *owner, repos: repoNames, envs: envNames,
		reviewer: *reviewer, hookURL: hook, secret: *secret, keyFile: *keyOut})
	if ready != nil {
		ready(sim)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-served:
		return err
	}
}

// lastmileConfig is the .github/lastmile.yml of ghsim's repositories.
func lastmileConfig(envs []string) string {
	var b strings.Builder
	b.WriteString("# .github/lastmile.yml, written by ghsim\nenvironments:\n")
	for _, e := range envs {
		fmt.Fprintf(&b, "  - name: %s\n", e)
	}
	return b.String()
}

type startInfo struct {
	api, owner, reviewer, secret, keyFile string
	appID, installation                   int64
	repos, envs                           []string
	hookURL                               *url.URL
}

// printStart says what ghsim serves, and how to start lastmile against it
// and push a commit, with the values to use.
func printStart(w io.Writer, s startInfo) {
	listen := s.hookURL.Host
	if s.hookURL.Port() == "" {
		listen = net.JoinHostPort(s.hookURL.Hostname(), map[string]string{"http": "80", "https": "443"}[s.hookURL.Scheme])
	}
	database := filepath.Join(filepath.Dir(s.keyFile), "lastmile.db")
	gate := "every environment is ungated"
	if s.reviewer != "" {
		gate = "production needs " + s.reviewer + "'s review, given at once"
	}
	fmt.Fprintf(w, `ghsim: GitHub's REST API simulated at %s
  App %d, installed on %s (installation %d); its private key is in %s
  %s: enrolled (.github/lastmile.yml lists %s), with an on: deployment workflow; %s
  webhooks go to %s

Start lastmile in another terminal, from the lastmile repository:
  export LASTMILE_GITHUB_URL=%s LASTMILE_APP_ID=%d LASTMILE_WEBHOOK_SECRET=%s LASTMILE_PRIVATE_KEY_FILE=%s LASTMILE_LISTEN=%s LASTMILE_DATABASE=%s
  go run ./cmd/lastmile serve

Then push a commit to %s's main branch (lastmile makes it a release) and look, with the same export:
  curl -X POST %s_ghsim/push
  go run ./cmd/lastmile history
`, s.api, s.appID, s.owner, s.installation, s.keyFile, strings.Join(s.repos, ", "), strings.Join(s.envs, ", "), gate, s.hookURL,
		shellQuote(s.api), s.appID, shellQuote(s.secret), shellQuote(s.keyFile), shellQuote(listen), shellQuote(database),
		s.repos[0], s.api)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// pusher is POST /_ghsim/push: it pushes one commit, with the simulator's
// own push (the push webhook follows), to a branch of one of ghsim's
// repositories.
// controlForm admits a request to ghsim's controls (from a loopback
// address only) and parses its form; it answers the request itself and
// reports false when it refuses it.
func controlForm(w http.ResponseWriter, r *http.Request) bool {
	if !fromLoopback(r) {
		controlError(w, http.StatusForbidden, "ghsim's control answers only to loopback addresses")
		return false
	}
	if err := r.ParseForm(); err != nil {
		controlError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// knownRepo is the repository of repos named name, ignoring case as GitHub
// does.
func knownRepo(repos []string, name string) (string, bool) {
	for _, known := range repos {
		if strings.EqualFold(known, name) {
			return known, true
		}
	}
	return name, false
}

// installer is ghsim's control of the App's installation: what an
// organisation owner does on GitHub (suspend, unsuspend, uninstall, remove
// a repository), with the webhooks GitHub sends.
type installer struct {
	sim     *simulator.Simulator
	id      int64
	account string
	repos   []string
	out     io.Writer

	mu   sync.Mutex
	gone bool // uninstalled: nothing more can be done to it
}

func (in *installer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !controlForm(w, r) {
		return
	}
	by := r.Form.Get("by")
	if by == "" {
		by = "octocat"
	}
	if !branchName.MatchString(by) {
		controlError(w, http.StatusBadRequest, fmt.Sprintf("by %q: give a GitHub login", by))
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.gone {
		controlError(w, http.StatusConflict, fmt.Sprintf("the App was uninstalled from %s: restart ghsim to install it again", in.account))
		return
	}
	action, repo := r.Form.Get("action"), ""
	var err error
	switch action {
	case "suspend":
		err = in.sim.SuspendInstallation(in.id, by)
	case "unsuspend":
		err = in.sim.UnsuspendInstallation(in.id, by)
	case "uninstall":
		in.sim.DeleteInstallation(in.id, by)
		in.gone = true
	case "remove":
		var known bool
		if repo, known = knownRepo(in.repos, r.Form.Get("repo")); !known {
			controlError(w, http.StatusNotFound, fmt.Sprintf("no repository %q: ghsim has %s", r.Form.Get("repo"), strings.Join(in.repos, ", ")))
			return
		}
		err = in.sim.RemoveRepositoryFromInstallation(repo, by)
	default:
		controlError(w, http.StatusBadRequest, fmt.Sprintf("action %q: give suspend, unsuspend, uninstall, or remove with repo", action))
		return
	}
	if err != nil {
		// Done already (suspended twice, a repository removed twice) or
		// not to be done (unsuspended while active): nothing changed.
		controlError(w, http.StatusConflict, err.Error())
		return
	}
	fmt.Fprintf(in.out, "ghsim: %s %s%s (installation %d)\n", by, action, map[bool]string{true: " " + repo}[repo != ""], in.id)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(map[string]any{"installation": in.id, "action": action, "repository": repo, "by": by})
}

type pusher struct {
	sim   *simulator.Simulator
	repos []string
	out   io.Writer

	mu sync.Mutex
	n  int
}

// branchName is what the control accepts as a branch.
var branchName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)

func (p *pusher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !controlForm(w, r) {
		return
	}
	repo := r.Form.Get("repo")
	if repo == "" {
		repo = p.repos[0]
	}
	repo, known := knownRepo(p.repos, repo)
	if !known {
		controlError(w, http.StatusNotFound, fmt.Sprintf("no repository %q: ghsim has %s", repo, strings.Join(p.repos, ", ")))
		return
	}
	branch := r.Form.Get("branch")
	if branch == "" {
		branch = "main"
	}
	if !branchName.MatchString(branch) || strings.Contains(branch, "..") || strings.HasPrefix(branch, "refs/") {
		controlError(w, http.StatusBadRequest, fmt.Sprintf("branch %q: give a branch name, such as main", branch))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	message := r.Form.Get("message")
	if message == "" {
		message = fmt.Sprintf("Change %d, pushed through ghsim", p.n)
	}
	res := p.sim.Push(repo, branch, simulator.CommitSpec{
		Message: message,
		Author:  simulator.Author{Name: "Mona Lisa Octocat", Email: "mona@example.com", Login: "octocat"},
		Files:   map[string]string{"CHANGES.txt": fmt.Sprintf("change %d: %s\n", p.n, message)},
	})
	fmt.Fprintf(p.out, "ghsim: pushed %s to %s %s (%s..%s)\n", short(res.After), repo, branch, short(res.Before), short(res.After))
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"repository": repo, "branch": branch, "before": res.Before, "after": res.After})
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func controlError(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": message})
}

func short(sha string) string { return sha[:min(len(sha), 7)] }

// lockedWriter serialises writes: the control's pushes report from their
// requests' goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
