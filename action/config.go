package action

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"unicode"

	"mvdan.cc/sh/v3/syntax"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Mode is what a step of the Action does.
type Mode string

const (
	// ModeDeploy runs the deploy command and reports in_progress, then
	// success or failure (or error when the job is cancelled).
	ModeDeploy Mode = "deploy"
	// ModeRegister reports queued with the run's URL, so lastmile can link
	// the run while the gated deploy job waits for its reviewers.
	ModeRegister Mode = "register"
)

// The Action's inputs, as action.yml declares them.
const (
	InputMode               = "mode"
	InputCommand            = "command"
	InputPassEnvironmentArg = "pass-environment-arg"
	InputEnvironmentURL     = "environment-url"
	InputJobID              = "job-id"
	InputToken              = "token"
	InputRequireLastmile    = "require-lastmile"
	InputApp                = "app"
)

// Inputs lists the Action's inputs (the constants above): their INPUT_
// variables are the Action's own, kept from the deploy command.
var Inputs = []string{InputMode, InputCommand, InputPassEnvironmentArg, InputEnvironmentURL, InputJobID, InputToken, InputRequireLastmile, InputApp}

// The job's PATH and GOTOOLCHAIN as action.yml's first step records them,
// before its setup-go step changes them for the rest of the job; the
// deploy command gets them back. Absent (Run called from Go, or an older
// action.yml), the command has the Action's own.
const (
	// EnvJobPath is the job's PATH.
	EnvJobPath = "LASTMILE_JOB_PATH"
	// EnvJobGoToolchainSet is "true" when the job had GOTOOLCHAIN set
	// (to EnvJobGoToolchain's value), "false" when not: the command then
	// has none.
	EnvJobGoToolchainSet = "LASTMILE_JOB_GOTOOLCHAIN_SET"
	// EnvJobGoToolchain is the job's GOTOOLCHAIN.
	EnvJobGoToolchain = "LASTMILE_JOB_GOTOOLCHAIN"
)

// InputEnvName is the environment variable that carries input name, named
// the way the runner names them for JavaScript and Docker actions: "INPUT_",
// then the name with spaces replaced by underscores, upper-cased. Hyphens are
// kept: pass-environment-arg is INPUT_PASS-ENVIRONMENT-ARG. (A composite
// action gets no INPUT_ variables from the runner; action.yml sets them in
// its step's env: under the same names.)
func InputEnvName(name string) string {
	return "INPUT_" + strings.ToUpper(strings.ReplaceAll(name, " ", "_"))
}

// config is a run of the Action as its environment describes it.
type config struct {
	mode           Mode
	token          string
	apiURL         string
	serverURL      string
	owner, repo    string
	runID          int64
	runAttempt     int   // GITHUB_RUN_ATTEMPT: 2 and more for a re-run
	jobID          int64 // 0 when unknown
	deployment     deploymentEvent
	command        string
	passEnvArg     bool
	environmentURL string
	workspace      string // the command's working directory; "" for the current one
	// tempDir is RUNNER_TEMP, where the command's own GITHUB_OUTPUT file
	// is made; "" for the system's temporary directory.
	tempDir string
	// jobPath is the job's PATH from before the Action's setup-go step
	// (action.yml records it): the deploy command's PATH. "": unknown,
	// the command gets the Action's own.
	jobPath string
	// jobGoToolchain is the job's GOTOOLCHAIN from before setup-go, when
	// it was set; restoreGoToolchain tells that it was recorded (set or
	// not), so the command gets it back rather than setup-go's local.
	jobGoToolchain     *string
	restoreGoToolchain bool
	// requireLastmile: only a deployment whose payload carries lastmile's
	// marker is deployed (the default); other Apps' deployments (Vercel,
	// Netlify, Heroku…) trigger on: deployment workflows too.
	requireLastmile bool
	// app is the slug of the repository's lastmile App (input app): only
	// a deployment its bot, APP[bot], created is lastmile's. "": any
	// App's bot.
	app string
}

// deploymentEvent is the part of the deployment event payload the Action
// reads.
type deploymentEvent struct {
	ID          int64  `json:"id"`
	SHA         string `json:"sha"`
	Environment string `json:"environment"`
	// Payload is the deployment's payload: lastmile's carries its marker
	// (pipeline.DeploymentPayload).
	Payload json.RawMessage `json:"payload"`
	Creator struct {
		Login string `json:"login"`
		Type  string `json:"type"`
	} `json:"creator"`
}

// notLastmiles says why the deployment is not one lastmile created, or ""
// when it is: its payload carries lastmile's marker and an App created it,
// as lastmile creates its deployments (with its installation's token, as
// its App's bot, "SLUG[bot]", of type Bot). A marked deployment that a
// person created (with their token, the gh CLI) or a workflow (with its
// GITHUB_TOKEN, as github-actions[bot]) is a copy of the marker, not
// lastmile's: deploying it would deploy a commit past lastmile's order of
// environments. Another App's remains possible, unless app (input app)
// names lastmile's: then only APP[bot]'s is.
func (d deploymentEvent) notLastmiles(app string) string {
	if _, ok := pipeline.ParseMarker(d.Payload); !ok {
		return "its payload has no lastmile marker"
	}
	switch c := d.Creator; {
	case c.Login == pipeline.ActionsBot:
		return "its payload carries lastmile's marker, but a workflow created it (with its GITHUB_TOKEN, as " + pipeline.ActionsBot + "), not lastmile's App"
	case c.Type != "Bot" || !pipeline.AppsBot(c.Login):
		by := "no one GitHub names"
		if c.Login != "" {
			by = c.Login + ", a person"
		}
		return "its payload carries lastmile's marker, but " + by + " created it, not lastmile's App"
	case app != "" && !strings.EqualFold(c.Login, app+"[bot]"):
		return "its payload carries lastmile's marker, but " + c.Login + " created it, not " + app + "[bot], the App input " + InputApp + " names"
	}
	return ""
}

// lastmilesCreator tells whether login, a deployment's creator, may be
// lastmile's App: an App's bot, not a workflow's — the one input app
// names, if it names one.
func (c *config) lastmilesCreator(login string) bool {
	if c.app != "" {
		return strings.EqualFold(login, c.app+"[bot]")
	}
	return !pipeline.CopiedMarker(login)
}

// appSlug checks a GitHub App's slug, as its page's address has it
// (https://github.com/apps/SLUG): letters, digits and hyphens.
func appSlug(s string) error {
	if s == "" || len(s) > 100 || strings.HasPrefix(s, "-") || strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}) {
		return fmt.Errorf("%q is not a GitHub App's slug (the SLUG of https://github.com/apps/SLUG: letters, digits and hyphens)", s)
	}
	return nil
}

// runURL is the workflow run's page.
func (c *config) runURL() string {
	return fmt.Sprintf("%s/%s/%s/actions/runs/%d", c.serverURL, c.owner, c.repo, c.runID)
}

// logURL is the job's page when the job is known, else the page of this
// attempt of the run: the run's own page shows its latest attempt, and
// after a re-run the first attempt's failure would link to the logs of
// the attempt that followed it.
func (c *config) logURL() string {
	if c.jobID > 0 {
		return fmt.Sprintf("%s/job/%d", c.runURL(), c.jobID)
	}
	return fmt.Sprintf("%s/attempts/%d", c.runURL(), c.runAttempt)
}

// readConfig reads the inputs and the GITHUB_ variables; it reports every
// problem at once.
func readConfig(getenv func(string) string) (*config, error) {
	input := func(name string) string { return strings.TrimSpace(getenv(InputEnvName(name))) }
	// errs are the workflow's problems; deployErrs those of the inputs for
	// deploying alone, which a deployment that is not lastmile's (never
	// deployed) does not have (an environment-url built from another App's
	// environment name need not be a URL).
	var errs, deployErrs []error
	c := &config{
		mode:           ModeDeploy,
		command:        input(InputCommand),
		environmentURL: input(InputEnvironmentURL),
		apiURL:         strings.TrimSuffix(getenv("GITHUB_API_URL"), "/"),
		serverURL:      strings.TrimSuffix(getenv("GITHUB_SERVER_URL"), "/"),
		workspace:      getenv("GITHUB_WORKSPACE"),
		tempDir:        getenv("RUNNER_TEMP"),
	}
	if m := input(InputMode); m != "" {
		c.mode = Mode(strings.ToLower(m))
	}
	switch c.mode {
	case ModeDeploy:
		if c.command == "" {
			errs = append(errs, fmt.Errorf("input %s is required in mode %s: the command that deploys to the environment", InputCommand, ModeDeploy))
		}
	case ModeRegister:
	default:
		errs = append(errs, fmt.Errorf("input %s: %q is neither %s nor %s", InputMode, c.mode, ModeDeploy, ModeRegister))
	}
	if v := input(InputPassEnvironmentArg); v != "" {
		b, err := parseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("input %s: %w", InputPassEnvironmentArg, err))
		}
		c.passEnvArg = b
	}
	c.requireLastmile = true
	requireKnown := true // require-lastmile is valid
	if v := input(InputRequireLastmile); v != "" {
		b, err := parseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("input %s: %w", InputRequireLastmile, err))
			requireKnown = false
		}
		c.requireLastmile = b
	}
	if v := input(InputApp); v != "" {
		if err := appSlug(v); err != nil {
			errs = append(errs, fmt.Errorf("input %s: %w", InputApp, err))
			requireKnown = false
		}
		c.app = v
	}
	if c.passEnvArg && c.command != "" {
		if err := appendable(c.command); err != nil {
			deployErrs = append(deployErrs, fmt.Errorf("input %s: the environment cannot be appended to this command: %w; "+
				"use $LASTMILE_ENVIRONMENT in the command instead", InputPassEnvironmentArg, err))
		}
	}
	if v := c.environmentURL; v != "" && urlCredentials(v) {
		// GitHub shows environment_url to everyone who can read the
		// repository; the URL itself is not repeated here, in the log.
		deployErrs = append(deployErrs, fmt.Errorf("input %s: the URL holds a user name or password (USER:PASSWORD@ before its host), "+
			"which GitHub would show to everyone who can read the repository: give the environment's address without them", InputEnvironmentURL))
	} else if v != "" && !httpURL(v) {
		// GitHub takes any string as environment_url and shows it as the
		// deployment's link: a host without its scheme, or a javascript:
		// URL, would be a broken or unsafe link.
		deployErrs = append(deployErrs, fmt.Errorf("input %s: %q is not an http(s) URL (such as https://staging.example.com)", InputEnvironmentURL, withoutQuery(v)))
	}
	if v := input(InputJobID); v != "" {
		// job.check_run_id: empty where GitHub does not provide it (GitHub
		// Enterprise Server); then the run's URL stands in for the job's.
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			errs = append(errs, fmt.Errorf("input %s: %q is not a job id", InputJobID, v))
		}
		c.jobID = id
	}
	c.jobPath = getenv(EnvJobPath)
	switch v := getenv(EnvJobGoToolchainSet); v {
	case "":
	case "true":
		tc := getenv(EnvJobGoToolchain)
		c.jobGoToolchain, c.restoreGoToolchain = &tc, true
	case "false":
		c.restoreGoToolchain = true
	default:
		errs = append(errs, fmt.Errorf("%s: %q is neither true nor false", EnvJobGoToolchainSet, v))
	}
	c.token = input(InputToken)
	if c.token == "" {
		c.token = getenv("GITHUB_TOKEN")
	}
	if c.token == "" {
		errs = append(errs, fmt.Errorf("no GitHub token: input %s (default: the job's GITHUB_TOKEN) is empty", InputToken))
	}
	if c.apiURL == "" {
		c.apiURL = "https://api.github.com"
	}
	if c.serverURL == "" {
		c.serverURL = "https://github.com"
	}
	owner, repo, err := pipeline.SplitFullName(getenv("GITHUB_REPOSITORY"))
	if err != nil {
		errs = append(errs, fmt.Errorf("GITHUB_REPOSITORY: %w", err))
	}
	c.owner, c.repo = owner, repo
	if v := getenv("GITHUB_RUN_ID"); v != "" {
		if c.runID, err = strconv.ParseInt(v, 10, 64); err != nil || c.runID <= 0 {
			errs = append(errs, fmt.Errorf("GITHUB_RUN_ID: %q is not a run id", v))
		}
	} else {
		errs = append(errs, errors.New("GITHUB_RUN_ID is not set: the lastmile Action runs in a GitHub Actions workflow"))
	}
	c.runAttempt = 1
	if v := getenv("GITHUB_RUN_ATTEMPT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("GITHUB_RUN_ATTEMPT: %q is not a run attempt", v))
		}
		c.runAttempt = n
	}
	if name := getenv("GITHUB_EVENT_NAME"); name != "deployment" {
		errs = append(errs, fmt.Errorf("the workflow was triggered by %q: the lastmile Action runs in a workflow triggered on: deployment", name))
	} else if d, err := readDeploymentEvent(getenv("GITHUB_EVENT_PATH")); err != nil {
		errs = append(errs, err)
	} else {
		c.deployment = d
		if requireKnown && c.requireLastmile && d.notLastmiles(c.app) != "" {
			// Not lastmile's: nothing is deployed or reported (Run says so
			// and skips), and the inputs for deploying do not matter.
			if err := errors.Join(errs...); err != nil {
				return nil, err
			}
			return c, nil
		}
		if c.deployment.SHA == "" {
			c.deployment.SHA = getenv("GITHUB_SHA")
			switch {
			case c.deployment.SHA == "":
				errs = append(errs, fmt.Errorf("deployment %d names no commit (no sha in the event payload), and GITHUB_SHA is not set: nothing to deploy", d.ID))
			case !commitSHA(c.deployment.SHA):
				errs = append(errs, fmt.Errorf("GITHUB_SHA: %q is not a commit SHA (40 or 64 hexadecimal digits)", c.deployment.SHA))
			}
		}
	}
	if err := errors.Join(append(errs, deployErrs...)...); err != nil {
		return nil, err
	}
	return c, nil
}

// readDeploymentEvent reads the deployment from the event payload at path.
func readDeploymentEvent(path string) (deploymentEvent, error) {
	if path == "" {
		return deploymentEvent{}, errors.New("GITHUB_EVENT_PATH is not set")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return deploymentEvent{}, fmt.Errorf("read the event payload: %w", err)
	}
	var ev struct {
		Deployment *deploymentEvent `json:"deployment"`
	}
	if err := json.Unmarshal(b, &ev); err != nil {
		return deploymentEvent{}, fmt.Errorf("event payload %s: %w", path, err)
	}
	if ev.Deployment == nil || ev.Deployment.ID <= 0 {
		return deploymentEvent{}, fmt.Errorf("event payload %s has no deployment", path)
	}
	d := ev.Deployment
	if d.Environment == "" {
		return deploymentEvent{}, fmt.Errorf("event payload %s: deployment %d has no environment", path, d.ID)
	}
	// The environment and the sha go into the job log as they are, where a
	// newline would start a line the runner reads as a workflow command
	// (::warning::, ::add-mask::…). GitHub's environment names hold no
	// control character, and a sha is hexadecimal: a payload with one is
	// not GitHub's, and nothing of it is printed.
	var errs []error
	if r, found := pipeline.UnsafeRune(d.Environment); found {
		errs = append(errs, fmt.Errorf("event payload %s: deployment %d: environment %q holds %U, a control character no GitHub environment name has", path, d.ID, d.Environment, r))
	}
	if d.SHA != "" && !commitSHA(d.SHA) {
		errs = append(errs, fmt.Errorf("event payload %s: deployment %d: sha %q is not a commit SHA (40 or 64 hexadecimal digits)", path, d.ID, d.SHA))
	}
	if err := errors.Join(errs...); err != nil {
		return deploymentEvent{}, err
	}
	return *d, nil
}

// httpURL tells whether s is an absolute http or https URL with a host
// (and a port, if any, from 1 to 65535), without white space or control
// characters.
func httpURL(s string) bool {
	if strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return false
	}
	if _, unsafe := pipeline.UnsafeRune(s); unsafe {
		return false
	}
	u, err := urlHead(s)
	if err != nil {
		return false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	scheme := strings.ToLower(u.Scheme)
	return (scheme == "http" || scheme == "https") && u.Host != "" && u.Hostname() != "" && u.Opaque == ""
}

// urlHead parses the scheme and authority of s, the parts httpURL judges:
// a browser opens a path or fragment with a stray % (…/50%-off) that
// url.Parse refuses.
func urlHead(s string) (*url.URL, error) {
	head := s
	if i := strings.Index(s, "://"); i >= 0 {
		if j := strings.IndexAny(s[i+3:], "/?#"); j >= 0 {
			head = s[:i+3+j]
		}
	}
	return url.Parse(head)
}

// urlCredentials tells whether the URL s carries a user name or password
// (https://user:secret@host/), or may: an @ before its path, query or
// fragment, wherever its scheme ends — also in what does not parse as a
// URL (a stray % or a space in the password, "https:user:pw@host",
// "https//user:pw@host", "user:pw@host"), which must not be repeated in a
// message either.
func urlCredentials(s string) bool {
	if u, err := urlHead(s); err == nil && u.User != nil {
		return true
	}
	rest := s
	if i := strings.Index(rest, "//"); i >= 0 {
		rest = rest[i+2:]
	}
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		rest = rest[:j]
	}
	return strings.Contains(rest, "@")
}

// commitSHA tells whether s is a full commit SHA: SHA-1's 40 hexadecimal
// digits, or SHA-256's 64.
func commitSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// parseBool accepts what GitHub's toolkit accepts for a boolean input
// (YAML 1.2 core schema): true, True, TRUE, false, False, FALSE.
func parseBool(s string) (bool, error) {
	switch s {
	case "true", "True", "TRUE":
		return true, nil
	case "false", "False", "FALSE":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean: use true or false", s)
}

// appendable checks, with a bash parser, that the environment appended to
// the script's text (as runCommand does) becomes the last argument of its
// last command: not swallowed by a trailing comment, glued on by a
// trailing backslash, made a command of its own after `;` or `&`, given to
// the last part of a pipeline, or written into a here-document's end.
func appendable(script string) error {
	script = strings.TrimRightFunc(script, unicode.IsSpace)
	word := shellQuote("environment")
	parser := syntax.NewParser(syntax.Variant(syntax.LangBash))
	before, err := parser.Parse(strings.NewReader(script), "")
	if err != nil {
		return fmt.Errorf("it cannot be read as a bash script (%v)", err)
	}
	appended := script + " " + word
	after, err := parser.Parse(strings.NewReader(appended), "")
	if err != nil {
		return fmt.Errorf("with the environment after it, it is no longer valid bash (%v)", err)
	}
	if len(after.Stmts) != len(before.Stmts) || len(after.Stmts) == 0 {
		return errors.New("the environment would be a command of its own, not an argument (the last line ends with ; or &)")
	}
	last := after.Stmts[len(after.Stmts)-1]
	call, simple := last.Cmd.(*syntax.CallExpr)
	if !simple || last.Background || last.Coprocess || len(call.Args) == 0 {
		return errors.New("its last line is not one simple command (a pipeline, a list with && or ||, a block or a loop)")
	}
	arg := call.Args[len(call.Args)-1]
	if int(arg.Pos().Offset()) != len(script)+1 || int(arg.End().Offset()) != len(appended) {
		return errors.New("the environment would not be its last argument (the last line ends with a comment, a backslash or a here-document)")
	}
	if len(call.Args) < 2 {
		// The last line runs nothing of its own (an assignment, a
		// redirection alone): the environment would be the command.
		return errors.New("the environment would be the command run, not an argument (the last line is an assignment or a redirection alone)")
	}
	return nil
}

// withoutQuery is url up to its query or fragment, "?…" in their place: a
// refused URL repeated in the job log, which everyone who can read the
// repository may read, without a token a query may carry.
func withoutQuery(url string) string {
	if i := strings.IndexAny(url, "?#"); i >= 0 {
		return url[:i] + "?…"
	}
	return url
}
