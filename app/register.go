package app

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lastmile-app/lastmile/githubapp"
)

// githubLogin is the form of a GitHub account's name: letters, digits and
// single hyphens between them (at most 39 characters, checked apart).
var githubLogin = regexp.MustCompile(`^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$`)

// checkAppName says what is wrong with name as a GitHub App's name ("" if
// nothing GitHub is known to refuse): it must have a letter or digit, and
// at most 34 characters.
func checkAppName(name string) string {
	switch {
	case strings.TrimSpace(name) == "":
		return "the App needs a name"
	case utf8.RuneCountInString(name) > 34:
		return "GitHub takes at most 34 characters"
	case !strings.ContainsFunc(name, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }):
		return "the App's name needs a letter or a digit"
	}
	return ""
}

// register runs GitHub's App manifest flow from 127.0.0.1: it serves a page
// whose button sends lastmile's manifest to GitHub; GitHub creates the App
// and sends the browser back with a code, which register exchanges for the
// App's ID, webhook secret and private key, written to files (mode 0600)
// that `lastmile serve` reads.
func register(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("lastmile register", `Usage: lastmile register --webhook-url https://lastmile.example.com/webhook [flags]

Creates lastmile's GitHub App with GitHub's manifest flow: open the page it
serves on 127.0.0.1, press the button, confirm on GitHub. The App's ID,
webhook secret and private key are written to --out (mode 0600).`, stderr)
	webhookURL := fs.String("webhook-url", "", "public https URL of lastmile's POST /webhook (required)")
	org := fs.String("org", "", "organisation that owns the App (default: your personal account)")
	name := fs.String("name", "lastmile", "the App's name on GitHub (must be unique on GitHub)")
	webURL := fs.String("github", "https://github.com", "GitHub's web root (GitHub Enterprise Server: https://HOST)")
	apiURL := fs.String("github-url", "", "GitHub's REST API root (default: https://api.github.com/, or HOST/api/v3/ for --github)")
	listen := fs.String("listen", "127.0.0.1:8787", "where to serve the registration page (keep it on 127.0.0.1)")
	out := fs.String("out", ".", "directory for lastmile-app.pem and lastmile.env")
	printOnly := fs.Bool("print-manifest", false, "only print the manifest JSON of --name and --webhook-url (to create the App by hand): nothing is served, written or created")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if u, err := url.Parse(*webhookURL); *webhookURL == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		fmt.Fprintln(stderr, "lastmile register: --webhook-url must be the public URL of lastmile's /webhook, e.g. https://lastmile.example.com/webhook")
		return errUsage
	}
	if u, _ := url.Parse(*webhookURL); u.User != nil || u.Fragment != "" || strings.HasSuffix(*webhookURL, "#") {
		// GitHub would keep a password in the App's settings, and show it
		// to whoever can read them; a fragment is never sent.
		fmt.Fprintln(stderr, "lastmile register: --webhook-url must not hold user:password@ or a #fragment: GitHub signs each delivery with the webhook secret instead")
		return errUsage
	}
	if problem := checkAppName(*name); problem != "" {
		fmt.Fprintf(stderr, "lastmile register: --name %q: %s\n", *name, problem)
		return errUsage
	}
	if *org != "" && (len(*org) > 39 || !githubLogin.MatchString(*org)) {
		fmt.Fprintf(stderr, "lastmile register: --org %q is not a GitHub organisation's name (letters, digits and single hyphens between them, at most 39)\n", *org)
		return errUsage
	}
	if u, _ := url.Parse(*webhookURL); u.Scheme != "https" {
		fmt.Fprintln(stderr, "lastmile register: warning: --webhook-url is not https: GitHub will send the deliveries unencrypted")
	}
	// lastmile answers deliveries on POST /webhook only: GitHub's, sent to
	// another path, would all be 404s — unless a proxy in front maps the
	// path to /webhook, which is why it is a warning, not a refusal.
	if u, _ := url.Parse(*webhookURL); u.Path != "/webhook" {
		path := u.EscapedPath()
		if path == "" {
			path = "/" // what GitHub asks for
		}
		fmt.Fprintf(stderr, "lastmile register: warning: --webhook-url's path is %q, not /webhook: lastmile answers deliveries on POST /webhook only, so a proxy in front of it must send this path there\n", path)
	}
	// The page's form posts there, and it is printed.
	if err := checkRootURL(*webURL, "GitHub's web root"); err != nil {
		fmt.Fprintf(stderr, "lastmile register: --github: %v\n", err)
		return errUsage
	}
	// A --github other than github.com is a GitHub Enterprise Server: its
	// API is under /api/v3/, and it keeps deliveries longer.
	w, err := url.Parse(*webURL)
	ghes := err == nil && w.Host != "github.com"
	if *apiURL == "" {
		*apiURL = "https://api.github.com/"
		if ghes {
			*apiURL = strings.TrimSuffix(*webURL, "/") + "/api/v3/"
		}
	}
	if err := checkGitHubURL(*apiURL); err != nil {
		// What it writes to lastmile.env, serve would refuse.
		fmt.Fprintf(stderr, "lastmile register: --github-url: %v\n", err)
		return errUsage
	}
	if *printOnly {
		// Without the manifest flow, there is no page for GitHub to send
		// the browser back to: no redirect_url, no port.
		return writeJSONTo(stdout, githubapp.NewManifest(*name, *webhookURL, ""))
	}
	// The App's key and secret are written there once GitHub has made the
	// App; an earlier App's must not be overwritten.
	for _, name := range []string{keyFile, envFile} {
		if _, err := os.Stat(filepath.Join(*out, name)); err == nil {
			fmt.Fprintf(stderr, "lastmile register: %s already exists (an earlier App's?): move it away, or choose another --out\n", filepath.Join(*out, name))
			return errUsage
		}
	}
	if !loopback(*listen) {
		fmt.Fprintf(stderr, "lastmile register: --listen %s: serve the registration page on a loopback address (127.0.0.1, ::1 or localhost): "+
			"it holds the state that ties GitHub's answer to this registration\n", *listen)
		return errUsage
	}
	// The files are written once GitHub has made the App: that they can
	// be is checked before, with the folder made if needed (and removed
	// again if no App's files come to it).
	undo, err := prepareOut(*out)
	if err != nil {
		fmt.Fprintf(stderr, "lastmile register: --out %s: the App's key and settings could not be written there: %v\n", *out, err)
		return errUsage
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	manifest := githubapp.NewManifest(*name, *webhookURL, "http://"+ln.Addr().String()+"/callback")
	formURL := githubapp.ManifestFormURL(*webURL, *org)
	r := &registration{
		manifest: manifest, state: randomHex(), token: randomHex(), origin: "http://" + ln.Addr().String(),
		formURL: formURL, appsURL: strings.TrimSuffix(formURL, "/new"), apiURL: *apiURL, ghes: ghes, out: absOr(*out),
		stdout: stdout, stderr: stderr, done: make(chan error, 1),
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	// The answer to GitHub's callback is still being written when done is
	// signalled: Shutdown lets it finish (Close would cut it off).
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	}()
	owner := "the App will belong to your personal account; for an organisation's, give --org ORG"
	if *org != "" {
		owner = "you must be an owner of the organisation " + *org
	}
	fmt.Fprintf(stdout, `To create lastmile's GitHub App:
  1. Open %s/?token=%s in a browser on this machine (or on yours, through
     ssh -L to this one) and press "Create the App on GitHub".
  2. On GitHub, check the name and press "Create GitHub App" (%s).
  3. GitHub sends you back here; lastmile writes the App's key and settings
     (%s, %s) to %s.
Waiting for GitHub (an hour at most; Ctrl-C to stop)...
`, r.origin, r.token, owner, keyFile, envFile, r.out)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.gotCode.Load() {
			return fmt.Errorf("stopped before GitHub's code was exchanged for the App's key: no settings were written. %s", r.recovery())
		}
		return errors.New("stopped before GitHub answered: no App was registered here")
	case <-time.After(time.Hour):
		if r.gotCode.Load() {
			return fmt.Errorf("GitHub's code could not be exchanged within the hour it is good for: no settings were written. %s", r.recovery())
		}
		return errors.New("no answer from GitHub within an hour (a manifest code is valid for an hour): run lastmile register again")
	}
}

// prepareOut checks that files can be created in dir: it creates the
// folder if needed (mode 0700, as its parents) and a file in it, which it
// removes. undo removes the folders it created, once they are empty again.
func prepareOut(dir string) (undo func(), err error) {
	var created []string // deepest first
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
			break
		}
		created = append(created, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	undo = func() {
		for _, d := range created {
			os.Remove(d) // fails, as it should, on a folder that is not empty
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		undo()
		return nil, err
	}
	f, err := os.CreateTemp(dir, ".lastmile-register-*")
	if err == nil {
		err = errors.Join(f.Close(), os.Remove(f.Name()))
	}
	if err != nil {
		undo()
		return nil, err
	}
	return undo, nil
}

// absOr is path made absolute, or path as it is if that fails.
func absOr(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// randomHex is 128 random bits, in hex.
func randomHex() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

type registration struct {
	manifest *githubapp.Manifest
	state    string // ties GitHub's answer to this registration
	// token is in the address register prints, so that only who sees it
	// gets the page (and the state in it): not another user of this
	// machine, who could reach the loopback port too. The page sets it as
	// a cookie, which the callback must bring back.
	token           string
	origin          string // http://127.0.0.1:PORT: GitHub's redirect goes there
	formURL, apiURL string
	ghes            bool   // a GitHub Enterprise Server's --github
	appsURL         string // the owner's list of Apps on GitHub
	out             string // absolute: the next steps name its files
	stdout, stderr  io.Writer
	done            chan error

	// gotCode is set once GitHub sent the browser back with a code: the App
	// then exists on GitHub, whatever becomes of the exchange.
	gotCode atomic.Bool

	mu       sync.Mutex // one answer is taken, once
	finished bool
	outcome  string // what the page says once finished
}

// recovery tells what to do when GitHub made the App but lastmile did not
// get (or could not keep) its key and secret.
func (r *registration) recovery() string {
	return fmt.Sprintf("GitHub may already have created the App: open its settings (%s), generate a private key, "+
		"set a webhook secret, and write %s as the README's \"Or create the App by hand\" section says; "+
		"or delete the App there and run lastmile register again.", r.appsURL, envFile)
}

var registerPage = template.Must(template.New("").Parse(`<!doctype html>
<meta charset="utf-8"><title>Register lastmile</title>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>Register lastmile as a GitHub App</h1>
<p>GitHub will create an App named <b>{{.Name}}</b> that receives webhooks at <code>{{.Hook}}</code>,
with read access to contents, actions, checks and metadata, and write access to deployments and commit statuses.</p>
<form action="{{.Action}}" method="post">
<input type="hidden" name="manifest" value="{{.Manifest}}">
<button type="submit">Create the App on GitHub</button>
</form>
<p>Afterwards, start lastmile with those settings (the commands are in the terminal that ran <code>lastmile register</code>), redeliver the App's first ping to check the webhook, install the App on your repositories, create the environments your configuration lists and give the gated ones required reviewers, then add the deploy workflow and <code>.github/lastmile.yml</code> (see the README).</p>
</body>`))

func (r *registration) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// Only a page this machine's browser opened by a loopback name: another
	// name that resolves to 127.0.0.1 (DNS rebinding) would let a web page
	// read the state and hand in its own App's code.
	if !loopback(req.Host) {
		http.Error(w, "open this page as http://127.0.0.1:PORT/ (or localhost)", http.StatusMisdirectedRequest)
		return
	}
	switch req.URL.Path {
	case "/":
		if subtle.ConstantTimeCompare([]byte(req.URL.Query().Get("token")), []byte(r.token)) != 1 {
			http.Error(w, "open the address lastmile register printed: it carries a one-time token", http.StatusForbidden)
			return
		}
		// The cookie must be set for the host GitHub's redirect goes to.
		if "http://"+req.Host != r.origin {
			http.Redirect(w, req, r.origin+"/?token="+r.token, http.StatusSeeOther)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: registerCookie, Value: r.token, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		manifest, _ := json.Marshal(r.manifest)
		_ = registerPage.Execute(w, map[string]string{
			"Name": r.manifest.Name, "Hook": r.manifest.HookAttributes.URL,
			"Action": r.formURL + "?state=" + r.state, "Manifest": string(manifest),
		})
	case "/callback":
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.finished {
			http.Error(w, "This registration is over: "+r.outcome, http.StatusGone)
			return
		}
		if c, err := req.Cookie(registerCookie); err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.token)) != 1 {
			http.Error(w, "this answer did not come back to the browser that opened the registration page: start again from the address lastmile register printed", http.StatusForbidden)
			return
		}
		if subtle.ConstantTimeCompare([]byte(req.URL.Query().Get("state")), []byte(r.state)) != 1 {
			http.Error(w, "this answer does not belong to this registration (state mismatch): start again from the registration page", http.StatusBadRequest)
			return
		}
		code := req.URL.Query().Get("code")
		if code == "" {
			http.Error(w, "GitHub sent no code", http.StatusBadRequest)
			return
		}
		r.gotCode.Store(true)
		// Not the browser's request context: a reload or a closed tab while
		// GitHub answers would throw away the only answer it gives for
		// this code (the App's key and secret).
		ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 30*time.Second)
		defer cancel()
		reg, err := githubapp.ConvertManifest(ctx, r.apiURL, code, http.DefaultTransport)
		// A code is good for one conversion, within the hour. Without an
		// answer from GitHub (or with a server error, or a rate limit) the
		// code may never have been acted on: the registration stays open,
		// and reloading the page tries it again (a code GitHub did use is
		// then answered 404, which is final).
		var ce *githubapp.ConversionError
		if errors.As(err, &ce) && ce.Retryable() {
			fmt.Fprintf(r.stderr, "lastmile register: %v\n  Reload the page in the browser to try again (GitHub's code is good for an hour).\n", err)
			http.Error(w, err.Error()+"\n\nGitHub gave no answer lastmile can act on. Reload this page to try again: "+
				"GitHub's code is good for an hour, unless GitHub used it.", http.StatusServiceUnavailable)
			return
		}
		if err == nil {
			err = r.save(reg)
		}
		// GitHub answered: whatever the outcome, this registration is over.
		r.finished = true
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, r.recovery())
			r.outcome = err.Error()
			http.Error(w, r.outcome, http.StatusBadGateway)
			r.done <- err
			return
		}
		r.outcome = fmt.Sprintf("lastmile's App %s (ID %d) exists. Its settings are in %s. You can close this page.\n", reg.Slug, reg.AppID, r.out)
		fmt.Fprint(w, r.outcome)
		r.done <- nil
	default:
		http.NotFound(w, req)
	}
}

// registerCookie carries the page's token back with GitHub's answer.
const registerCookie = "lastmile_register"

// The files register writes, in --out.
const (
	keyFile = "lastmile-app.pem"
	envFile = "lastmile.env"
)

// ghesRedeliveryWindow is LASTMILE_REDELIVERY_WINDOW for a GitHub
// Enterprise Server, which keeps deliveries for 7 days (github.com, 3: the
// default).
const ghesRedeliveryWindow = "168h"

// writeNew writes a file that must not exist yet, readable by its owner
// only (os.WriteFile keeps an existing file's mode).
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

// save writes the App's key and settings (secrets: mode 0600) and tells the
// user what to do next, without printing a secret.
func (r *registration) save(reg *githubapp.Registration) error {
	if err := os.MkdirAll(r.out, 0o700); err != nil {
		return err
	}
	keyPath, err := filepath.Abs(filepath.Join(r.out, keyFile))
	if err != nil {
		return err
	}
	if err := writeNew(keyPath, []byte(reg.PrivateKeyPEM)); err != nil {
		return err
	}
	envPath := filepath.Join(r.out, envFile)
	env := "LASTMILE_APP_ID=" + strconv.FormatInt(reg.AppID, 10) + "\n" +
		"LASTMILE_WEBHOOK_SECRET=" + shellWord(reg.WebhookSecret) + "\n" +
		"LASTMILE_PRIVATE_KEY_FILE=" + shellWord(keyPath) + "\n" +
		"LASTMILE_GITHUB_URL=" + shellWord(r.apiURL) + "\n"
	settings := "LASTMILE_APP_ID, LASTMILE_WEBHOOK_SECRET, LASTMILE_PRIVATE_KEY_FILE, LASTMILE_GITHUB_URL"
	if r.ghes {
		env += "LASTMILE_REDELIVERY_WINDOW=" + ghesRedeliveryWindow + "\n"
		settings += ", LASTMILE_REDELIVERY_WINDOW"
	}
	if err := writeNew(envPath, []byte(env)); err != nil {
		return err
	}
	fmt.Fprintf(r.stdout, `
GitHub created the App %q (ID %d): %s
  private key:  %s
  settings:     %s (%[7]s)
Next:
  1. Start lastmile with those settings and a database on a persistent disk (the read
     commands need the same LASTMILE_DATABASE), on the server: if this machine is not
     it, copy both files there first, correct LASTMILE_PRIVATE_KEY_FILE in lastmile.env
     (it names the key's path here), and run these there, with that lastmile.env:
       sudo install -d -o "$USER" /var/lib/lastmile   # the database's folder, yours
       echo 'LASTMILE_DATABASE=/var/lib/lastmile/lastmile.db' >> %[6]s
       # /metrics and /api stay off the public address:
       echo 'LASTMILE_ADMIN_LISTEN=127.0.0.1:9797' >> %[6]s
       set -a; . %[6]s; set +a; lastmile serve
     (This runs lastmile as yourself, with sudo only to make the database's folder; the
     README's step 4 runs it as a user of its own, and its systemd unit needs the
     database to be that user's.)
  2. Check the webhook: in the App's settings (Advanced → Recent Deliveries), redeliver
     the ping GitHub sent when it created the App; lastmile answers 200.
  3. Install the App on the repositories to deploy: %[3]s/installations/new
  4. In each repository first give the gated environments required reviewers (Settings →
     Environments: create the environments the configuration will list, by the same
     names), then add the deploy workflow and .github/lastmile.yml: the push that adds
     it is already a release. See the README. Set the Actions variable LASTMILE_APP to
     %[1]s (Settings → Secrets and variables → Actions → Variables, for the organisation
     or the repository): the example workflow deploys only this App's deployments then.
`, reg.Slug, reg.AppID, reg.HTMLURL, keyPath, envPath, shellWord(sourcePath(envPath)), settings)
	return nil
}

// loopback reports whether hostport (an address, or a Host header) names
// this machine's loopback interface.
func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// shellWord is s as one word for a POSIX shell (lastmile.env is meant for
// `set -a; . ./lastmile.env`): as it is when it needs no quoting, else
// single-quoted. (docker --env-file reads no quotes at all, and systemd
// reads a value with an embedded quote differently.)
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-./:@%+,=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// sourcePath is path as the `.` command finds it: with a slash (without
// one, POSIX sh searches PATH instead of the current directory).
func sourcePath(path string) string {
	if strings.Contains(path, "/") {
		return path
	}
	return "./" + path
}
