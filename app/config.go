package app

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Secret is a string that never prints: logs, errors and %v show REDACTED.
type Secret string

func (s Secret) String() string               { return "REDACTED" }
func (s Secret) GoString() string             { return "REDACTED" }
func (s Secret) LogValue() slog.Value         { return slog.StringValue("REDACTED") }
func (s Secret) MarshalText() ([]byte, error) { return []byte("REDACTED"), nil }

// Reveal returns the secret's value, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }

// Config is the service configuration: every setting is an environment
// variable with a matching flag of `lastmile serve` (flags win).
type Config struct {
	Listen         string
	AdminListen    string // "": /metrics and /api on Listen
	Database       string
	WebhookSecret  Secret
	AppID          int64
	PrivateKeyFile string
	PrivateKey     Secret // PEM
	GitHubURL      string

	APIToken           Secret
	LogLevel           slog.Level
	Workers            int
	MaxAttempts        int
	RedeliveryInterval time.Duration
	RedeliveryWindow   time.Duration
	RetentionDays      int
	DeployLogMaxBytes  int
	ContextsTimeout    time.Duration
	ShutdownTimeout    time.Duration

	// IgnoredVariables are the LASTMILE_ environment variables that are
	// no setting, nor one misspelled (the Action's LASTMILE_SHA, say):
	// warned of at start.
	IgnoredVariables []string

	// SecretFlags are the secrets given as flags (--webhook-secret, say):
	// other users of the machine can read them in the process list
	// (ps): warned of at start.
	SecretFlags []string

	// Parsed from PrivateKey or PrivateKeyFile by Load. Never encoded: a
	// JSON log handler would print the private exponent and primes.
	Key *rsa.PrivateKey `json:"-"`

	// sweepEvery is how often the periodic sweep runs (zero: every
	// minute); tests shorten it.
	sweepEvery time.Duration
	// unreachableFor is the worker's UnreachableFor; tests shorten it.
	unreachableFor time.Duration
}

// redactURL is u with its user information (user:password@) and its query
// and fragment, any of which may hold a credential, replaced by REDACTED,
// whether or not u parses: for logs and error messages. Everything after
// the scheme up to the last '@' is taken for user information, wherever
// that '@' is: a password may hold '/', '?' or '#', or be all digits, and
// a typo ("https:///user:pw@host", "https:/user:pw@host") puts it
// anywhere; a URL lastmile takes holds no '@' (checkRootURL).
func redactURL(u string) string {
	prefix, rest := "", u
	if i := strings.Index(u, "://"); i > 0 && urlScheme.MatchString(u[:i]) {
		prefix, rest = u[:i+3], u[i+3:]
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		prefix, rest = prefix+"REDACTED", rest[at:]
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i+1] + "REDACTED"
	}
	return prefix + rest
}

// urlScheme is a URL's scheme (RFC 3986): what comes before a "://" that
// is not one is not kept whole by redactURL.
var urlScheme = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*$`)

// setting describes one configuration value: its variable, its flag, its
// default and what it means. The table drives parsing, validation and help.
type setting struct {
	env, flag, def, help string
	required             bool
	secret               bool
	set                  func(c *Config, v string) error
}

var settings = []setting{
	{env: "LASTMILE_LISTEN", flag: "listen", def: ":8080", help: "address of the webhook endpoint (and /healthz, /readyz, and /metrics and /api unless LASTMILE_ADMIN_LISTEN is set): host:port, such as :8080 or 127.0.0.1:8080",
		set: func(c *Config, v string) error {
			c.Listen = v
			return checkHostPort(v)
		}},
	{env: "LASTMILE_ADMIN_LISTEN", flag: "admin-listen", help: "address for /metrics and /api (and /healthz, /readyz), off the webhook's internet-facing address, which then serves only /webhook, /healthz and /readyz: host:port, such as 127.0.0.1:9797 (unset: all on LASTMILE_LISTEN)",
		set: func(c *Config, v string) error {
			c.AdminListen = v
			return checkHostPort(v)
		}},
	{env: "LASTMILE_DATABASE", flag: "database", def: "lastmile.db", help: "SQLite database file (created if missing; its folder must exist)",
		set: func(c *Config, v string) error {
			if strings.TrimSpace(v) == "" {
				return errors.New("must not be empty")
			}
			if fi, err := os.Stat(filepath.Dir(v)); err != nil || !fi.IsDir() {
				return fmt.Errorf("the folder of %s does not exist", v)
			}
			if fi, err := os.Stat(v); err == nil && fi.IsDir() {
				return fmt.Errorf("%s is a folder: name the database file in it, such as %s", v, filepath.Join(v, "lastmile.db"))
			} else if err == nil && !fi.Mode().IsRegular() {
				return fmt.Errorf("%s is not a regular file (a FIFO, a device or a socket): name a database file", v)
			}
			c.Database = v
			return nil
		}},
	{env: "LASTMILE_WEBHOOK_SECRET", flag: "webhook-secret", required: true, secret: true, help: "the GitHub App's webhook secret",
		set: func(c *Config, v string) error { c.WebhookSecret = Secret(v); return nil }},
	{env: "LASTMILE_APP_ID", flag: "app-id", required: true, help: "the GitHub App's ID",
		set: func(c *Config, v string) error {
			id, err := strconv.ParseInt(v, 10, 64)
			if err != nil || id <= 0 {
				return fmt.Errorf("%q is not a positive integer", v)
			}
			c.AppID = id
			return nil
		}},
	{env: "LASTMILE_PRIVATE_KEY_FILE", flag: "private-key-file", help: "file holding the App's PEM private key (this or LASTMILE_PRIVATE_KEY is required; both in the environment, or both as flags, is an error: a flag replaces the other's variable)",
		set: func(c *Config, v string) error { c.PrivateKeyFile = v; return nil }},
	{env: "LASTMILE_PRIVATE_KEY", flag: "private-key", secret: true, help: "the App's PEM private key itself (not with LASTMILE_PRIVATE_KEY_FILE, but --private-key replaces that variable)",
		set: func(c *Config, v string) error { c.PrivateKey = Secret(v); return nil }},
	{env: "LASTMILE_GITHUB_URL", flag: "github-url", def: "https://api.github.com/", help: "GitHub REST API root, without user:password@, query or fragment; GitHub Enterprise Server: https://HOST/api/v3/",
		set: func(c *Config, v string) error {
			if err := checkGitHubURL(v); err != nil {
				return err
			}
			c.GitHubURL = v
			return nil
		}},
	{env: "LASTMILE_API_TOKEN", flag: "api-token", secret: true, help: "bearer token for the read-only history API under /api/, at least 16 characters, no whitespace at either end (unset: the API is off)",
		set: func(c *Config, v string) error {
			// The token a client sends is read without the whitespace
			// around it: one configured with some could never match.
			if strings.TrimSpace(v) != v {
				return ruleError("must not start or end with whitespace (a newline copied with it?)")
			}
			if v != "" && len(v) < 16 {
				return ruleError("must be at least 16 characters")
			}
			c.APIToken = Secret(v)
			return nil
		}},
	{env: "LASTMILE_LOG_LEVEL", flag: "log-level", def: "info", help: "debug, info, warn or error",
		set: func(c *Config, v string) error {
			// slog also reads offsets (error+100 would log nothing at
			// all): the four names alone.
			switch strings.ToLower(v) {
			case "debug", "info", "warn", "error":
				return c.LogLevel.UnmarshalText([]byte(v))
			}
			return fmt.Errorf("%q: use debug, info, warn or error", v)
		}},
	{env: "LASTMILE_WORKERS", flag: "workers", def: "4", help: "repositories handled at the same time by the worker (1 to 256)",
		set: intSetting(func(c *Config) *int { return &c.Workers }, 1, 256)},
	{env: "LASTMILE_MAX_ATTEMPTS", flag: "max-attempts", def: "10", help: "attempts at handling a delivery before it is parked as dead (1 to 100); waiting for GitHub's rate limit does not count, nor, for six hours after the delivery's receipt, waiting for GitHub to answer (no answer, a 5xx)",
		set: intSetting(func(c *Config) *int { return &c.MaxAttempts }, 1, 100)},
	{env: "LASTMILE_REDELIVERY_INTERVAL", flag: "redelivery-interval", def: "10m", help: "how often to ask GitHub for missed deliveries: at least 1s and shorter than the redelivery window, or 0 to turn it off",
		set: durationSetting(func(c *Config) *time.Duration { return &c.RedeliveryInterval }, time.Second, true)},
	{env: "LASTMILE_REDELIVERY_WINDOW", flag: "redelivery-window", def: "72h", help: "how far back GitHub keeps deliveries (at least 1h): 72h on github.com, 168h on GitHub Enterprise Server",
		set: durationSetting(func(c *Config) *time.Duration { return &c.RedeliveryWindow }, time.Hour, false)},
	{env: "LASTMILE_RETENTION_DAYS", flag: "retention-days", def: "0", help: "prune raw delivery bodies and deploy logs older than this many days, at most 36500 (0 keeps them); records and metrics stay, and the database file shrinks by what was pruned (one created by an earlier lastmile: run lastmile vacuum once)",
		set: intSetting(func(c *Config) *int { return &c.RetentionDays }, 0, 36500)},
	{env: "LASTMILE_DEPLOY_LOG_MAX_BYTES", flag: "deploy-log-max-bytes", def: "1048576", help: "largest deploy job log kept per job, 1024 to 1073741824 (the rest is cut, and the record says so)",
		set: intSetting(func(c *Config) *int { return &c.DeployLogMaxBytes }, 1024, 1<<30)},
	{env: "LASTMILE_CONTEXTS_TIMEOUT", flag: "contexts-timeout", def: "24h", help: "how long a release waits for its required contexts to turn green (at least 1m)",
		set: durationSetting(func(c *Config) *time.Duration { return &c.ContextsTimeout }, time.Minute, false)},
	{env: "LASTMILE_SHUTDOWN_TIMEOUT", flag: "shutdown-timeout", def: "30s", help: "how long SIGTERM waits for the delivery in hand (at least 1s)",
		set: durationSetting(func(c *Config) *time.Duration { return &c.ShutdownTimeout }, time.Second, false)},
}

func intSetting(field func(*Config) *int, lo, hi int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("%q is not an integer from %d to %d", v, lo, hi)
		}
		*field(c) = n
		return nil
	}
}

// durationSetting parses a duration of at least least (or 0, when zeroOff:
// zero turns the feature off).
func durationSetting(field func(*Config) *time.Duration, least time.Duration, zeroOff bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q is not a duration such as 90s, 10m or 72h", v)
		}
		if d < least && !(zeroOff && d == 0) {
			if zeroOff {
				return fmt.Errorf("%s is too short: use at least %s, or 0 to turn it off", v, least)
			}
			return fmt.Errorf("%s is too short: use at least %s", v, least)
		}
		*field(c) = d
		return nil
	}
}

// ruleError is a problem with a secret setting that does not show the
// secret: it is reported as is, where other errors about secrets are not.
type ruleError string

func (e ruleError) Error() string { return string(e) }

// DefaultConfig is the configuration with every default applied and no
// required setting.
func DefaultConfig() *Config {
	c := &Config{}
	for _, s := range settings {
		if s.def != "" {
			if err := s.set(c, s.def); err != nil {
				panic(fmt.Sprintf("default of %s: %v", s.env, err))
			}
		}
	}
	return c
}

// checkGitHubURL accepts GitHub's REST API root: an http(s) URL with a
// host, and nothing that does not belong there (credentials, which would
// be logged, a query or a fragment).
func checkGitHubURL(v string) error {
	return checkRootURL(v, "the API root")
}

// checkRootURL accepts an http(s) URL with a host and no user information,
// query nor fragment: what, the root of one of GitHub's sites.
func checkRootURL(v, what string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL with a host", redactURL(v))
	}
	var wrong []string
	if u.User != nil || strings.Contains(v, "@") {
		wrong = append(wrong, "a user name or password (user:password@), nor any '@'")
	}
	if u.RawQuery != "" || u.ForceQuery {
		wrong = append(wrong, "a query (?…)")
	}
	if u.Fragment != "" || strings.Contains(v, "#") {
		wrong = append(wrong, "a fragment (#…)")
	}
	if len(wrong) > 0 {
		why := ""
		if u.User != nil || strings.Contains(v, "@") {
			why = ": lastmile needs no credentials in it (it authenticates as the App), and the URL is printed and logged"
		}
		return fmt.Errorf("%q must be %s alone, without %s%s", redactURL(v), what, strings.Join(wrong, ", nor "), why)
	}
	return nil
}

// checkHostPort accepts a listen address: host:port, the host possibly
// empty (every interface), the port 0 to 65535 in decimal digits (0: one
// the system picks, logged at start — for tests and harnesses).
func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("not a host:port address: %v", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 || strings.Trim(port, "0123456789") != "" {
		return fmt.Errorf("%q is not a port (0 to 65535)", port)
	}
	return nil
}

// sameSocket reports whether listening on a and b (checked by
// checkHostPort) would take one socket twice: the same port, not 0, on
// hosts that meet — either every interface ("", 0.0.0.0, ::, however
// spelled), or the same address (localhost is 127.0.0.1, as Go listens on
// it; a zone is left out), or the same host name.
func sameSocket(a, b string) bool {
	hostA, portA, _ := net.SplitHostPort(a)
	hostB, portB, _ := net.SplitHostPort(b)
	pa, _ := strconv.Atoi(portA)
	pb, _ := strconv.Atoi(portB)
	if pa != pb || pa == 0 {
		return false
	}
	ip := func(h string) net.IP {
		if strings.EqualFold(h, "localhost") {
			h = "127.0.0.1"
		}
		h, _, _ = strings.Cut(h, "%")
		return net.ParseIP(h)
	}
	ipA, ipB := ip(hostA), ip(hostB)
	every := func(h string, ip net.IP) bool { return h == "" || ip != nil && ip.IsUnspecified() }
	switch {
	case every(hostA, ipA) || every(hostB, ipB):
		return true
	case ipA != nil && ipB != nil:
		return ipA.Equal(ipB)
	default:
		return strings.EqualFold(hostA, hostB)
	}
}

// ErrFlags is returned by LoadConfig, within its *ConfigError, for a
// command line it could not parse (an unknown flag, a flag without its
// value) or one with arguments that are not flags.
var ErrFlags = errors.New("invalid flags")

// LoadConfig reads the configuration from getenv and the flags in args
// (flags win). It returns every problem at once, joined, the command
// line's among them.
func LoadConfig(args []string, getenv func(string) string, usage io.Writer) (*Config, error) {
	// The usage is printed for help asked for only: a wrong flag is one
	// of the problems listed, which the whole table would bury.
	fs := flag.NewFlagSet("lastmile serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	values := map[string]*string{}
	for _, s := range settings {
		values[s.flag] = fs.String(s.flag, "", s.help)
	}
	var problems []error
	// The flag package stops at the first flag it cannot read: parsing
	// goes on after it, so that the flags after it are checked too.
	unknown := "" // the last unknown flag, as named on the command line
	for rest := args; ; {
		err := fs.Parse(rest)
		if errors.Is(err, flag.ErrHelp) {
			PrintServeUsage(usage)
			return nil, err
		}
		if err == nil {
			if fs.NArg() > 0 {
				problems = append(problems, strayArguments(fs.Args(), flagsNamed(args), unknown))
			}
			break
		}
		problems = append(problems, flagProblem(err, fs))
		next := fs.Args()
		if strings.HasPrefix(err.Error(), "bad flag syntax: ") && len(next) > 0 {
			// Bad flag syntax (---name, -=value): the argument is not
			// consumed (the flags before it are). Taken as an unknown
			// flag, its value (after "=", or the next argument) passed
			// over likewise.
			bad := next[0]
			next = next[1:]
			unknown = "--" + flagName(bad)
			if !strings.Contains(bad, "=") && len(next) > 0 && next[0] != "--" && fs.Lookup(flagName(next[0])) == nil {
				next = next[1:]
			}
		} else if bad := rest[len(rest)-len(next)-1]; fs.Lookup(flagName(bad)) == nil {
			// An unknown flag: every setting's flag takes a value, and so,
			// most likely, did this one. Its value, the next argument
			// unless that is a flag of serve's, is passed over, and never
			// shown: it may be a secret (--webhok-secret VALUE).
			unknown = "--" + flagName(bad)
			if !strings.Contains(bad, "=") && len(next) > 0 && next[0] != "--" && fs.Lookup(flagName(next[0])) == nil {
				next = next[1:]
			}
		}
		if len(next) == 0 {
			break
		}
		rest = next
	}
	badFlags := len(problems) > 0
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	// Parsing stops at the first argument that is not a flag, and at
	// "--": a flag named in args that was not read is not known, and
	// neither is its setting (the environment's value may be the one the
	// flag overrides). Such settings are not checked.
	unread := map[string]bool{}
	if badFlags {
		for name := range flagsNamed(args) {
			unread[name] = !explicit[name]
		}
	}

	c := &Config{}
	source := map[string]string{} // where each setting's value came from: its variable, or its flag
	for _, s := range settings {
		if unread[s.flag] {
			continue
		}
		v, from := getenv(s.env), s.env
		source[s.env] = from
		if explicit[s.flag] {
			v, from = *values[s.flag], "--"+s.flag
			source[s.env] = from
			// A flag given empty (--database="$DB", DB unset) is no
			// choice of the default: it would put the database, or
			// /metrics and the read API, somewhere else than the
			// environment says, without a word.
			if v == "" {
				then := s.env + " then applies"
				if s.def != "" {
					then += ", or, unset, its default " + s.def
				} else if !s.required {
					then += ", or, unset, what lastmile serve --help says of it" // the API off, say
				}
				problems = append(problems, fmt.Errorf("--%s is empty: give it a value, or leave the flag out (%s)", s.flag, then))
				continue
			}
			// A flag given no value takes the next one's as its own
			// (--webhook-secret --api-token=…): never a setting's value.
			if name, ok := strings.CutPrefix(v, "-"); ok {
				name, _, _ = strings.Cut(strings.TrimPrefix(name, "-"), "=")
				if _, isFlag := values[name]; isFlag {
					problems = append(problems, fmt.Errorf("--%s has no value: the flag after it (--%s) was taken as its value; give it one (--%s=VALUE)", s.flag, name, s.flag))
					unread[s.flag] = true // not known: nor is what it depends on (the key)
					continue
				}
			}
		} else if other, ok := keyCounterpart[s.flag]; ok && explicit[other] {
			// The key's flag wins over the environment's key, either way.
			continue
		}
		if v == "" {
			if s.required {
				problems = append(problems, fmt.Errorf("%s is required (%s)", s.env, s.help))
				continue
			}
			v = s.def
		}
		if v == "" {
			continue
		}
		if err := s.set(c, v); err != nil {
			var rule ruleError
			if s.secret && !errors.As(err, &rule) {
				err = errors.New("invalid value") // never echo a secret back
			}
			problems = append(problems, fmt.Errorf("%s: %w", from, err))
		}
	}
	if c.RedeliveryInterval > 0 && c.RedeliveryWindow > 0 && c.RedeliveryInterval >= c.RedeliveryWindow {
		problems = append(problems, fmt.Errorf("%s %s is not shorter than %s %s: a delivery that failed just after a check would have left GitHub's store before the next one; check more often",
			source["LASTMILE_REDELIVERY_INTERVAL"], c.RedeliveryInterval, source["LASTMILE_REDELIVERY_WINDOW"], c.RedeliveryWindow))
	}
	if c.AdminListen != "" && checkHostPort(c.AdminListen) == nil && checkHostPort(c.Listen) == nil && sameSocket(c.AdminListen, c.Listen) {
		problems = append(problems, fmt.Errorf("LASTMILE_ADMIN_LISTEN %s and LASTMILE_LISTEN %s would take the same port: give the admin address a port of its own (or unset it to serve everything on one address)", c.AdminListen, c.Listen))
	}
	if !unread["private-key"] && !unread["private-key-file"] {
		if key, err := c.loadKey(); err != nil {
			problems = append(problems, err)
		} else {
			c.Key = key
		}
	}
	misspelled, ignored := unknownVariables(getenv)
	problems = append(problems, misspelled...)
	c.IgnoredVariables = ignored
	for _, s := range settings {
		if s.secret && explicit[s.flag] {
			c.SecretFlags = append(c.SecretFlags, "--"+s.flag)
		}
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems, flags: badFlags}
	}
	return c, nil
}

// keyCounterpart pairs the two ways of giving the App's key (flags).
var keyCounterpart = map[string]string{"private-key": "private-key-file", "private-key-file": "private-key"}

// environ lists the process's environment, where LoadConfig looks for the
// LASTMILE_ variables that are no setting.
var environ = os.Environ

// unknownVariables sorts the LASTMILE_ variables of the environment that
// getenv sees (and not only environ: a test's getenv sees its own) and
// that are no setting: one a letter or two from a setting's name is a
// problem, its setting silently left at its default otherwise
// (LASTMILE_ADMIN_LISTN would put /metrics and /api on the webhook's
// address); the others are ignored. Values are never shown.
func unknownVariables(getenv func(string) string) (misspelled []error, ignored []string) {
	known := map[string]bool{}
	for _, s := range settings {
		known[s.env] = true
	}
	seen := map[string]bool{}
	for _, kv := range environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "LASTMILE_") || known[name] || seen[name] || getenv(name) == "" {
			continue
		}
		seen[name] = true
		envs := make([]string, len(settings))
		for i, s := range settings {
			envs[i] = s.env
		}
		if closest := closestName(name, envs); closest != "" {
			misspelled = append(misspelled, fmt.Errorf("%s is no setting: did you mean %s?", name, closest))
		} else {
			ignored = append(ignored, name)
		}
	}
	slices.Sort(ignored)
	return misspelled, ignored
}

// closestName is the one of names a letter or two from name (a typo of
// it), "" when none is.
func closestName(name string, names []string) string {
	closest, best := "", 3
	for _, n := range names {
		if d := editDistance(name, n); d < best {
			closest, best = n, d
		}
	}
	return closest
}

// flagProblem is an error of the flag package as lastmile says it: the
// flag named as the documentation names it (--name, where the package
// says -name), and an unknown flag a letter or two from one of fs's with
// a suggestion (flag provided but not defined: --admin-listn: did you mean
// --admin-listen?). Another error is returned as it is.
func flagProblem(err error, fs *flag.FlagSet) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		msg = "flag provided but not defined: --" + name
		if closest := closestName(name, names); closest != "" {
			msg += ": did you mean --" + closest + "?"
		}
		return errors.New(msg)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return errors.New("flag needs an argument: --" + name)
	}
	// bad flag syntax: ---name=value: shown without its value, which may
	// be a secret's.
	if arg, ok := strings.CutPrefix(msg, "bad flag syntax: "); ok {
		name, _, _ := strings.Cut(arg, "=")
		return fmt.Errorf("bad flag syntax: %s (a flag is --name or -name, its value after = or next)", name)
	}
	// invalid value "V" for flag -NAME: …, invalid boolean value "V" for -NAME: …
	for _, words := range [][2]string{{"invalid value ", " for flag -"}, {"invalid boolean value ", " for -"}} {
		rest, ok := strings.CutPrefix(msg, words[0])
		if !ok {
			continue
		}
		value, err := strconv.QuotedPrefix(rest)
		if err != nil {
			continue
		}
		if tail, ok := strings.CutPrefix(rest[len(value):], words[1]); ok {
			// The flag package's "parse error" says what the value is not.
			if name, why, ok := strings.Cut(tail, ": "); ok && (why == "parse error" || why == "value out of range") {
				if g, ok := flagGetter(fs, name); ok {
					switch g.Get().(type) {
					case bool:
						tail = name + ": give true or false"
					case int, int64, uint, uint64:
						tail = name + ": give a whole number"
						if why == "value out of range" {
							tail = name + ": out of range"
						}
					}
				}
			}
			return errors.New(words[0] + value + words[1] + "-" + tail)
		}
	}
	return err
}

// flagGetter is the named flag's value, when it can tell its type.
func flagGetter(fs *flag.FlagSet, name string) (flag.Getter, bool) {
	f := fs.Lookup(name)
	if f == nil {
		return nil, false
	}
	g, ok := f.Value.(flag.Getter)
	return g, ok
}

// flagName is the name of the flag arg names (-name, --name,
// --name=value, and ---name, which the flag package refuses).
func flagName(arg string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// strayArguments is the problem of the arguments left after the flags.
// They are shown, unless a secret's flag is on the command line, or an
// unknown flag (a secret's, misspelt) comes before them: an unquoted
// secret or key with spaces in it (--private-key $(cat key.pem)) leaves
// the rest of its value there, which is never echoed.
func strayArguments(stray []string, named map[string]bool, unknown string) error {
	for _, s := range settings {
		if s.secret && named[s.flag] {
			return fmt.Errorf("%d unexpected arguments after the flags (not shown: they may be the rest of --%s's value; quote a value that holds spaces or line breaks)", len(stray), s.flag)
		}
	}
	if unknown != "" {
		return fmt.Errorf("%d unexpected arguments after the flags (not shown: they may be the rest of %s's value; quote a value that holds spaces or line breaks)", len(stray), unknown)
	}
	return errors.New("unexpected arguments: " + strings.Join(stray, " "))
}

// flagsNamed is the names of the flags args names: -name, --name,
// -name=value (and any value that looks like one).
func flagsNamed(args []string) map[string]bool {
	named := map[string]bool{}
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			named[flagName(a)] = true
		}
	}
	return named
}

// ConfigError lists every problem found in the configuration. It is
// ErrFlags when the command line is among them (errors.Is).
type ConfigError struct {
	Problems []error
	flags    bool
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Is reports whether target is ErrFlags and the command line is wrong.
func (e *ConfigError) Is(target error) bool { return target == ErrFlags && e.flags }

func (c *Config) loadKey() (*rsa.PrivateKey, error) {
	pemBytes := []byte(c.PrivateKey.Reveal())
	source := "LASTMILE_PRIVATE_KEY (--private-key)"
	switch {
	case c.PrivateKeyFile != "" && c.PrivateKey != "":
		return nil, errors.New("set only one of LASTMILE_PRIVATE_KEY_FILE (--private-key-file) and LASTMILE_PRIVATE_KEY (--private-key)")
	case c.PrivateKeyFile != "":
		// The key itself, put where its file's name goes, is never echoed.
		if what := keyMaterial(c.PrivateKeyFile); what != "" {
			return nil, fmt.Errorf("LASTMILE_PRIVATE_KEY_FILE (--private-key-file) %s, not a file name: put the key in LASTMILE_PRIVATE_KEY, or its file's path here", what)
		}
		b, err := os.ReadFile(c.PrivateKeyFile)
		if err != nil && len(c.PrivateKeyFile) > maxShownKeyFile {
			return nil, fmt.Errorf("LASTMILE_PRIVATE_KEY_FILE (--private-key-file): cannot read the file it names (%d bytes, not shown: is it the key itself? Put the key in LASTMILE_PRIVATE_KEY, or its file's path here): %v",
				len(c.PrivateKeyFile), errors.Unwrap(err))
		}
		if err != nil {
			return nil, fmt.Errorf("LASTMILE_PRIVATE_KEY_FILE (--private-key-file): cannot read %s: %v", c.PrivateKeyFile, errors.Unwrap(err))
		}
		pemBytes, source = b, "LASTMILE_PRIVATE_KEY_FILE "+c.PrivateKeyFile
	case c.PrivateKey == "":
		return nil, errors.New("LASTMILE_PRIVATE_KEY_FILE or LASTMILE_PRIVATE_KEY is required (the App's PEM private key)")
	}
	key, err := ParsePrivateKey(pemBytes)
	if err != nil && bytes.Contains(pemBytes, []byte(`\n`)) && !bytes.Contains(pemBytes, []byte("\n")) {
		// As some .env files and CI secret stores write a key.
		return nil, fmt.Errorf("%s: %w: it holds \\n escapes where its line breaks go; give it its real line breaks (a quoted multi-line value), or put it in a file for LASTMILE_PRIVATE_KEY_FILE", source, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	return key, nil
}

// keyMaterial says what makes a value given as the key's file name key
// material rather than a file name ("" when nothing does): a PEM block, a
// line break (a key's lines), or more than a path holds (PATH_MAX).
func keyMaterial(v string) string {
	switch {
	case strings.Contains(v, "-----BEGIN"):
		return "holds a PEM key"
	case strings.ContainsAny(v, "\r\n"):
		return "holds a line break (key material?)"
	case len(v) > 4096:
		return fmt.Sprintf("holds %d bytes (key material?)", len(v))
	}
	return ""
}

// maxShownKeyFile is the longest key file name an error repeats: a longer
// one that cannot be read may be a key's base64 on one line (a 2048-bit
// key's is about 1,600 characters).
const maxShownKeyFile = 256

// passphraseProtected is the advice for an encrypted private key.
const passphraseProtected = "the private key is passphrase-protected: lastmile needs the unencrypted PEM GitHub generated; decrypt it (openssl pkey -in KEY -out KEY.plain asks for the passphrase) and use that file"

// ParsePrivateKey reads an RSA private key in PEM (PKCS#1, as GitHub
// issues it, or PKCS#8). Errors never include the key.
func ParsePrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("not a PEM private key")
	}
	switch block.Type {
	case "ENCRYPTED PRIVATE KEY": // PKCS#8 with a passphrase
		return nil, errors.New(passphraseProtected)
	case "RSA PRIVATE KEY":
		// OpenSSL's traditional encryption: "Proc-Type: 4,ENCRYPTED" and
		// the cipher in "DEK-Info", the block's bytes the ciphertext.
		if _, ok := block.Headers["DEK-Info"]; ok || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED") {
			return nil, errors.New(passphraseProtected)
		}
		key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("malformed RSA private key")
		}
		return key, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errors.New("malformed PKCS#8 private key")
		}
		key, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("the private key is %T, not RSA: GitHub Apps use RSA keys", k)
		}
		return key, nil
	default:
		return nil, fmt.Errorf("PEM block %q is not an RSA private key: GitHub Apps use RSA keys", block.Type)
	}
}

// PrintServeUsage explains every setting of `lastmile serve`.
func PrintServeUsage(w io.Writer) {
	fmt.Fprintln(w, `Usage: lastmile serve [flags]

Runs the GitHub App: the webhook intake, the worker that promotes releases,
and the /metrics, /healthz, /readyz and /api endpoints. Every setting is an
environment variable with a matching flag; flags win.`)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tFLAG\tDEFAULT\tMEANING")
	for _, s := range settings {
		def := s.def
		if s.required {
			def = "(required)"
		}
		fmt.Fprintf(tw, "%s\t--%s\t%s\t%s\n", s.env, s.flag, def, s.help)
	}
	tw.Flush()
}
