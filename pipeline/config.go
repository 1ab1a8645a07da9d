package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// ConfigPath is where a repository declares its pipeline.
const ConfigPath = ".github/lastmile.yml"

// MaxEnvironments bounds the environments a configuration lists. Each is a
// set of series in every scrape of /metrics (and rows of the ledger): a
// file of thousands, pushed by anyone who may push to the branch, would
// make every scrape megabytes long.
const MaxEnvironments = 25

// Config is a repository's .github/lastmile.yml.
type Config struct {
	// Branch whose pushes become releases; "" means the repository's
	// default branch.
	Branch string `json:"branch,omitempty"`
	// RequiredContexts must be green on a commit before its first
	// deployment is created (GitHub checks them; see CreateDeployment).
	RequiredContexts []string `json:"required_contexts"`
	// Environments in promotion order.
	Environments []Environment `json:"environments"`
	// Deployments says who creates the environments' deployments:
	// DeploymentsLastmile ("", the default) or DeploymentsWorkflow.
	Deployments string `json:"deployments,omitempty"`
}

// The values of the configuration's deployments key.
const (
	// DeploymentsLastmile: lastmile creates each environment's deployment,
	// in order, and a workflow on deployment deploys it.
	DeploymentsLastmile = "lastmile"
	// DeploymentsWorkflow: a workflow (on push) creates them, one job per
	// environment naming it; lastmile creates none, and is the
	// environments' protection rule, records their deployments and counts
	// them.
	DeploymentsWorkflow = "workflow"
)

// WorkflowDeploys reports whether the workflow creates the environments'
// deployments (deployments: workflow), lastmile none.
func (c *Config) WorkflowDeploys() bool {
	return c != nil && c.Deployments == DeploymentsWorkflow
}

// PipelineBranch is the branch whose pushes become releases, given the
// repository's default branch.
func (c *Config) PipelineBranch(defaultBranch string) string {
	if c.Branch == "" {
		return defaultBranch
	}
	return c.Branch
}

// Environment is one stage of the pipeline.
type Environment struct {
	Name       string `json:"name"`
	Production bool   `json:"production"`
}

// Index returns the position of the named environment, or -1. GitHub's
// environment names ignore case (sameEnvironment).
func (c *Config) Index(name string) int {
	for i, e := range c.Environments {
		if sameEnvironment(e.Name, name) {
			return i
		}
	}
	return -1
}

// sameEnvironment reports whether two names are one environment: GitHub's
// environment names ignore case. Index asks it, and ParseConfig's
// duplicate check refuses every pair it holds for (through foldKey), so
// that no two environments of a configuration are one to Index (staging
// and ſtaging, with U+017F, fold alike).
func sameEnvironment(a, b string) bool {
	return strings.EqualFold(a, b)
}

// foldKey is s with each character replaced by the least of the
// characters Unicode's simple case folding holds equal to it: two strings
// have the same key exactly when strings.EqualFold holds, so a map keyed
// by it finds a duplicate in any case at once.
func foldKey(s string) string {
	var b strings.Builder
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// caseKeys are the keys under which a name is one with another: Unicode's
// simple case folding (sameEnvironment's) and strings.ToLower's lower
// case, by which the engine keys environments in maps — they differ for a
// few letters (İ is i in lower case, but folds to no other letter).
func caseKeys(s string) [2]string {
	return [2]string{"fold:" + foldKey(s), "lower:" + strings.ToLower(s)}
}

// ConfigError is a problem in .github/lastmile.yml, with its line. Its
// message says what is wrong first, then the text of the file it is about
// (a name, a key), in full: Error is what lastmile logs and keeps in the
// release's record; Description is the shorter form for a commit status.
type ConfigError struct {
	Line int
	Msg  string
	// format and args make Msg, with the file's text as values: again,
	// shortened, for Description.
	format string
	args   []any
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s line %d: %s", ConfigPath, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", ConfigPath, e.Msg)
}

// Description is the error in at most max characters, for the
// lastmile/config commit status (GitHub keeps 140): without the file's
// path, which the status's context names, and with the file's text cut in
// the middle (to 40 characters, or fewer if the whole would not fit), so
// that what is wrong, said first, is never what is cut off.
func (e *ConfigError) Description(max int) string {
	prefix := ""
	if e.Line > 0 {
		prefix = fmt.Sprintf("line %d: ", e.Line)
	}
	if e.format == "" {
		return truncate(prefix+e.Msg, max)
	}
	var d string
	for _, width := range []int{40, 32, 24, 16, 10} {
		d = prefix + fmt.Sprintf(e.format, shortArgs(e.args, width)...)
		if utf8.RuneCountInString(d) <= max {
			return d
		}
	}
	return truncate(d, max)
}

func configErr(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &ConfigError{Line: line, Msg: fmt.Sprintf(format, args...), format: format, args: args}
}

// value is text of the file in a message (%q quotes it, %s and %v give it
// as it is): in full in Error, cut in the middle in Description.
type value string

func (v value) Format(f fmt.State, verb rune) { writeValue(f, verb, string(v), 0) }

// shortValue is a value cut to width characters.
type shortValue struct {
	s     string
	width int
}

func (v shortValue) Format(f fmt.State, verb rune) { writeValue(f, verb, v.s, v.width) }

// writeValue formats s as the verb and flags of f would a string, cut in
// the middle to width characters (0: whole).
func writeValue(f fmt.State, verb rune, s string, width int) {
	format := fmt.FormatString(f, verb)
	io.WriteString(f, middleCut(s, width, func(s string) string { return fmt.Sprintf(format, s) }))
}

// middleCut returns show(s), or — when that is longer than width
// characters (0: no limit) — show of s's beginning and end joined by …,
// as long as fits.
func middleCut(s string, width int, show func(string) string) string {
	out := show(s)
	if width <= 0 || utf8.RuneCountInString(out) <= width {
		return out
	}
	r := []rune(s)
	for n := min(len(r), width); n > 0; n-- {
		out = show(string(r[:(n+1)/2]) + "…" + string(r[len(r)-n/2:]))
		if utf8.RuneCountInString(out) <= width {
			return out
		}
	}
	return show("…")
}

// problem is an error about text of the file, whose values (see value)
// Description shortens.
type problem struct {
	format string
	args   []any
}

func problemf(format string, args ...any) error { return &problem{format, args} }

func (p *problem) Error() string { return fmt.Sprintf(p.format, p.args...) }

// shortArgs returns args with each value, also within a problem, cut to
// width characters.
func shortArgs(args []any, width int) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch a := a.(type) {
		case value:
			out[i] = shortValue{string(a), width}
		case *problem:
			out[i] = fmt.Sprintf(a.format, shortArgs(a.args, width)...)
		default:
			out[i] = a
		}
	}
	return out
}

// ParseConfig parses .github/lastmile.yml strictly: unknown keys, duplicate
// keys or environment names, an empty environment list and values of the
// wrong type are errors that name their line.
func ParseConfig(data []byte) (*Config, error) {
	if err := plainText(data); err != nil {
		return nil, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlSyntaxError(err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return nil, configErr(&more, "a second YAML document: the file must hold one (remove the ---)")
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlSyntaxError(err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, &ConfigError{Msg: "the file is empty: it must list environments"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, configErr(root, "the file must be a mapping with an environments key")
	}
	c := &Config{RequiredContexts: []string{}}
	var envs, contexts, deployments *yaml.Node
	err := eachKey(root, []string{"branch", "required_contexts", "deployments", "environments"}, func(key string, k, v *yaml.Node) error {
		switch key {
		case "branch":
			s, err := str(v, "branch")
			if err != nil {
				return err
			}
			if err := validRefName(s); err != nil {
				return configErr(v, "branch: %v: %q", err, value(s))
			}
			c.Branch = s
		case "required_contexts":
			list, err := strList(v, "required_contexts")
			if err != nil {
				return err
			}
			c.RequiredContexts, contexts = list, v
		case "deployments":
			s, err := str(v, "deployments")
			if err != nil {
				return err
			}
			if s != DeploymentsLastmile && s != DeploymentsWorkflow {
				return configErr(v, "deployments must be %s (lastmile creates them, the default) or %s (a workflow on push does): %q",
					DeploymentsLastmile, DeploymentsWorkflow, value(s))
			}
			if s == DeploymentsWorkflow {
				c.Deployments, deployments = s, v
			}
		case "environments":
			envs = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if deployments != nil && len(c.RequiredContexts) > 0 {
		// GitHub checks required contexts when a deployment is created
		// through the API, which lastmile then does not do: the
		// workflow's jobs wait for what they need (needs:).
		return nil, configErr(contexts, "required_contexts applies to the deployments lastmile creates: with deployments: %s (line %d) it creates none; make the workflow's jobs wait for the checks instead",
			DeploymentsWorkflow, deployments.Line)
	}
	if envs == nil {
		return nil, configErr(root, "environments is required: list the environments in promotion order")
	}
	if envs.Kind != yaml.SequenceNode {
		return nil, configErr(envs, "environments must be a list")
	}
	if len(envs.Content) == 0 {
		return nil, configErr(envs, "environments must list at least one environment")
	}
	if len(envs.Content) > MaxEnvironments {
		return nil, configErr(envs, "environments lists %d environments: lastmile promotes through at most %d", len(envs.Content), MaxEnvironments)
	}
	type listed struct {
		name string
		line int
	}
	seen := map[string]listed{} // by caseKeys
	explicitProd := make([]*bool, len(envs.Content))
	for i, item := range envs.Content {
		if item.Kind == yaml.AliasNode {
			return nil, configErr(item, "an alias (*%s) in environments: write each environment out, once", value(item.Value))
		}
		if item.Kind != yaml.MappingNode {
			return nil, configErr(item, "each environment must be a mapping with a name, e.g. - name: staging")
		}
		var env Environment
		err := eachKey(item, []string{"name", "production"}, func(key string, k, v *yaml.Node) error {
			switch key {
			case "name":
				s, err := str(v, "environment name")
				if err != nil {
					return err
				}
				if err := validEnvironmentName(s); err != nil {
					return configErr(v, "environment name %v: %q", err, value(s))
				}
				env.Name = s
			case "production":
				var b bool
				if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" || v.Decode(&b) != nil {
					return configErr(v, "production must be true or false")
				}
				explicitProd[i] = &b
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if env.Name == "" {
			return nil, configErr(item, "environment has no name")
		}
		// GitHub's environment names are not case sensitive.
		keys := caseKeys(env.Name)
		first, dup := seen[keys[0]]
		if !dup {
			first, dup = seen[keys[1]]
		}
		if dup {
			if first.name != env.Name {
				return nil, configErr(item, "environment listed twice, ignoring case as GitHub does (first on line %d as %q): %q",
					first.line, value(first.name), value(env.Name))
			}
			return nil, configErr(item, "environment listed twice (first on line %d): %q", first.line, value(env.Name))
		}
		for _, k := range keys {
			seen[k] = listed{env.Name, item.Line}
		}
		c.Environments = append(c.Environments, env)
	}
	for i := range c.Environments {
		if explicitProd[i] != nil {
			c.Environments[i].Production = *explicitProd[i]
		} else {
			c.Environments[i].Production = i == len(c.Environments)-1
		}
	}
	return c, nil
}

// eachKey walks a mapping, rejecting unknown and repeated keys.
func eachKey(m *yaml.Node, allowed []string, fn func(key string, k, v *yaml.Node) error) error {
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return configErr(k, "keys must be plain words")
		}
		known := false
		for _, a := range allowed {
			known = known || a == k.Value
		}
		if !known {
			return configErr(k, "unknown key %q (allowed here: %s)", value(k.Value), strings.Join(allowed, ", "))
		}
		if first, dup := seen[k.Value]; dup {
			return configErr(k, "key %q appears twice (first on line %d)", k.Value, first)
		}
		seen[k.Value] = k.Line
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

// str reads a string value. No value of the file may hold a control
// character (see UnsafeRune): each ends up in logs, commit statuses and
// GitHub's pages.
func str(v *yaml.Node, what string) (string, error) {
	if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
		return "", configErr(v, "%s must be a string", what)
	}
	if strings.TrimSpace(v.Value) == "" {
		return "", configErr(v, "%s must not be empty", what)
	}
	if r, found := UnsafeRune(v.Value); found {
		return "", configErr(v, "%s %s: %q", what, unsafeRuneProblem(r), value(v.Value))
	}
	return v.Value, nil
}

// UnsafeRune returns the first rune of s that can change how a line of text
// reads rather than being part of it, and whether there is one: a control
// character (C0, DEL, C1: a newline starts a line that looks like the
// program's own, an escape sequence acts on a terminal), a Unicode line or
// paragraph separator, or a bidirectional control (U+061C, U+200E, U+200F,
// U+202A–U+202E, U+2066–U+2069), which makes text show in another order
// than it is read. No name GitHub accepts holds one.
func UnsafeRune(s string) (rune, bool) {
	for _, r := range s {
		switch {
		case r < 0x20, r >= 0x7f && r <= 0x9f,
			r == 0x2028, r == 0x2029,
			r == 0x061c, r == 0x200e, r == 0x200f,
			r >= 0x202a && r <= 0x202e,
			r >= 0x2066 && r <= 0x2069:
			return r, true
		}
	}
	return 0, false
}

// unsafeRuneProblem says what is wrong with a rune UnsafeRune found.
func unsafeRuneProblem(r rune) string {
	switch {
	case r == 0x2028 || r == 0x2029:
		return "contains the line break " + runeName(r)
	case r > 0x9f:
		return "contains the bidirectional control " + runeName(r)
	}
	return "contains the control character " + runeName(r)
}

func strList(v *yaml.Node, what string) ([]string, error) {
	if v.Kind != yaml.SequenceNode {
		return nil, configErr(v, "%s must be a list of strings", what)
	}
	out := []string{}
	type listed struct {
		s    string
		line int
	}
	seen := map[string]listed{} // by foldKey
	for _, item := range v.Content {
		s, err := str(item, what+" entry")
		if err != nil {
			return nil, err
		}
		// Without regard to case, as GitHub and requires compare contexts.
		if first, dup := seen[foldKey(s)]; dup {
			if first.s != s {
				return nil, configErr(item, "%s lists an entry twice, ignoring case as GitHub does (first on line %d as %q): %q", what, first.line, value(first.s), value(s))
			}
			return nil, configErr(item, "%s lists an entry twice (first on line %d): %q", what, first.line, value(s))
		}
		seen[foldKey(s)] = listed{s, item.Line}
		out = append(out, s)
	}
	return out, nil
}

// validEnvironmentName follows GitHub's limits on environment names (str
// has refused control characters).
func validEnvironmentName(s string) error {
	if utf8.RuneCountInString(s) > 255 {
		return errors.New("is longer than 255 characters")
	}
	if strings.TrimSpace(s) != s {
		return errors.New("starts or ends with a space")
	}
	// Invisible: two names that read the same would be two environments.
	if r, found := invisibleRune(s); found {
		return errors.New("contains the invisible character " + runeName(r))
	}
	return nil
}

// invisibleRune returns the first character of s that shows as nothing
// (a soft hyphen, a zero-width space or joiner, a byte order mark), if any:
// with one, a name reads as another.
func invisibleRune(s string) (rune, bool) {
	if i := strings.IndexAny(s, "\u00ad\u180e\u200b\u2060\ufeff"); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return r, true
	}
	return 0, false
}

// validRefName applies git's rules for a branch name (git check-ref-format
// --branch), so that a name no push can have is refused rather than
// silently matching nothing. str has refused control characters.
func validRefName(s string) error {
	if strings.HasPrefix(s, "refs/") {
		return errors.New("give the branch name without refs/heads/")
	}
	// git takes one, but the name would read as another's ("main"), and
	// no push to the branch it reads as would ever be taken.
	if r, found := invisibleRune(s); found {
		return errors.New("a branch name with the invisible character " + runeName(r) + " reads as another")
	}
	if i := strings.IndexAny(s, " ~^:?*[\\"); i >= 0 {
		return fmt.Errorf("a branch name cannot hold %q: git refuses space, ~, ^, :, ?, *, [ and \\ in one", s[i:i+1])
	}
	for _, bad := range []string{"..", "@{", "//"} {
		if strings.Contains(s, bad) {
			return fmt.Errorf("git refuses %q in a branch name", bad)
		}
	}
	switch {
	case s == "@", s == "HEAD":
		return fmt.Errorf("git refuses %s as a branch name", s)
	case strings.HasPrefix(s, "-"):
		return errors.New("git refuses a branch name that starts with -")
	case strings.HasPrefix(s, "/"), strings.HasSuffix(s, "/"):
		return errors.New("git refuses a branch name that starts or ends with /")
	case strings.HasSuffix(s, "."):
		return errors.New("git refuses a branch name that ends with a dot")
	}
	for _, part := range strings.Split(s, "/") {
		if strings.HasPrefix(part, ".") {
			return problemf("git refuses a part of a branch name that starts with . (%q)", value(part))
		}
		if strings.HasSuffix(part, ".lock") {
			return problemf("git refuses a part of a branch name that ends with .lock (%q)", value(part))
		}
	}
	return nil
}

// plainText checks the file as text, before YAML reads it, so that each
// problem has its line: bytes that are not UTF-8, and anywhere in the file
// — in a comment too — a character that UnsafeRune reports (a control
// character other than tab and the newline, a line or paragraph separator,
// a bidirectional control), a carriage return that no newline follows,
// and the noncharacters U+FFFE and U+FFFF (which YAML refuses without a
// line). YAML reads U+0085, U+2028, U+2029 and a lone carriage return as
// line breaks where git and GitHub see none: in a comment, one would hide
// the setting after it, on what looks like the comment's own line. Lines
// are counted as git counts them, by newline.
func plainText(data []byte) error {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return &ConfigError{Line: line, Msg: "not valid YAML: the file is not UTF-8 text"}
		case r == '\n':
			line++
		case r == '\t':
		case r == '\r':
			if i+1 < len(data) && data[i+1] == '\n' {
				break
			}
			return &ConfigError{Line: line, Msg: "contains a lone carriage return (U+000D), which YAML reads as a line break but git and GitHub do not: end lines with a newline"}
		case r == 0xfffe, r == 0xffff:
			return &ConfigError{Line: line, Msg: fmt.Sprintf("contains the noncharacter %U, which YAML does not allow: remove it", r)}
		default:
			if _, unsafe := UnsafeRune(string(r)); unsafe {
				return &ConfigError{Line: line, Msg: textRuneProblem(r)}
			}
		}
		i += size
	}
	return nil
}

// textRuneProblem says what is wrong with a rune UnsafeRune reports, found
// anywhere in the file.
func textRuneProblem(r rune) string {
	switch r {
	case 0x85, 0x2028, 0x2029:
		return fmt.Sprintf("contains %s, which YAML reads as a line break but GitHub shows as none: remove it", runeName(r))
	}
	if r > 0x9f {
		return unsafeRuneProblem(r) + ", which makes text show in another order: remove it"
	}
	return unsafeRuneProblem(r) + ": remove it"
}

// runeName is r's code point, with its Unicode name for those the file
// may not hold.
func runeName(r rune) string {
	if name := runeNames[r]; name != "" {
		return fmt.Sprintf("%U (%s)", r, name)
	}
	return fmt.Sprintf("%U", r)
}

var runeNames = map[rune]string{
	0x85:   "NEXT LINE",
	0x2028: "LINE SEPARATOR",
	0x2029: "PARAGRAPH SEPARATOR",
	0x061c: "ARABIC LETTER MARK",
	0x200e: "LEFT-TO-RIGHT MARK",
	0x200f: "RIGHT-TO-LEFT MARK",
	0x202a: "LEFT-TO-RIGHT EMBEDDING",
	0x202b: "RIGHT-TO-LEFT EMBEDDING",
	0x202c: "POP DIRECTIONAL FORMATTING",
	0x202d: "LEFT-TO-RIGHT OVERRIDE",
	0x202e: "RIGHT-TO-LEFT OVERRIDE",
	0x2066: "LEFT-TO-RIGHT ISOLATE",
	0x2067: "RIGHT-TO-LEFT ISOLATE",
	0x2068: "FIRST STRONG ISOLATE",
	0x2069: "POP DIRECTIONAL ISOLATE",
	0x00ad: "SOFT HYPHEN",
	0x180e: "MONGOLIAN VOWEL SEPARATOR",
	0x200b: "ZERO WIDTH SPACE",
	0x2060: "WORD JOINER",
	0xfeff: "ZERO WIDTH NO-BREAK SPACE",
}

// yamlSyntaxError turns the YAML library's message ("yaml: line 3: ...")
// into a ConfigError with the line.
func yamlSyntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		if i := strings.Index(msg, ":"); i >= 0 {
			msg = strings.TrimSpace(msg[i+1:])
		}
	}
	return &ConfigError{Line: line, Msg: "not valid YAML: " + msg}
}
