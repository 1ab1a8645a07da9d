package pipeline

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseConfig(t *testing.T) {
	tests := map[string]struct {
		yaml    string
		want    *Config
		errLine int
		errText string
	}{
		"the spec's example": {
			yaml: "branch: main\nrequired_contexts: [build]\nenvironments:\n  - name: test\n  - name: staging\n  - name: production\n    production: true\n",
			want: &Config{Branch: "main", RequiredContexts: []string{"build"}, Environments: []Environment{
				{Name: "test"}, {Name: "staging"}, {Name: "production", Production: true}}},
		},
		"defaults: last environment is production, no contexts": {
			yaml: "environments:\n  - name: qa\n  - name: live\n",
			want: &Config{RequiredContexts: []string{}, Environments: []Environment{{Name: "qa"}, {Name: "live", Production: true}}},
		},
		"production set explicitly on a middle one": {
			yaml: "environments:\n  - name: eu\n    production: true\n  - name: us\n    production: false\n",
			want: &Config{RequiredContexts: []string{}, Environments: []Environment{{Name: "eu", Production: true}, {Name: "us"}}},
		},
		"a workflow creates the deployments": {
			yaml: "deployments: workflow\nenvironments:\n  - name: test\n  - name: production\n",
			want: &Config{RequiredContexts: []string{}, Deployments: DeploymentsWorkflow, Environments: []Environment{{Name: "test"}, {Name: "production", Production: true}}},
		},
		"lastmile creates them, said": {
			yaml: "deployments: lastmile\nrequired_contexts: [build]\nenvironments:\n  - name: live\n",
			want: &Config{RequiredContexts: []string{"build"}, Environments: []Environment{{Name: "live", Production: true}}},
		},
		"deployments of another value": {yaml: "deployments: actions\nenvironments:\n  - name: a\n", errLine: 1,
			errText: `deployments must be lastmile (lastmile creates them, the default) or workflow (a workflow on push does): "actions"`},
		"deployments not a string": {yaml: "environments:\n  - name: a\ndeployments: [workflow]\n", errLine: 3, errText: "deployments must be a string"},
		"required contexts where a workflow creates the deployments": {yaml: "deployments: workflow\nenvironments:\n  - name: a\nrequired_contexts: [build]\n", errLine: 4,
			errText: "required_contexts applies to the deployments lastmile creates: with deployments: workflow (line 1) it creates none"},
		"unknown top-level key":   {yaml: "environments:\n  - name: a\nenviroments: []\n", errLine: 3, errText: `unknown key "enviroments"`},
		"unknown environment key": {yaml: "environments:\n  - name: a\n    reviewers: [x]\n", errLine: 3, errText: `unknown key "reviewers"`},
		"duplicate environment":   {yaml: "environments:\n  - name: a\n  - name: b\n  - name: a\n", errLine: 4, errText: `environment listed twice (first on line 2): "a"`},
		"duplicate key":           {yaml: "branch: a\nbranch: b\nenvironments:\n  - name: x\n", errLine: 2, errText: `key "branch" appears twice`},
		"duplicate environment in another case": {yaml: "environments:\n  - name: production\n  - name: Production\n", errLine: 3,
			errText: `environment listed twice, ignoring case as GitHub does (first on line 2 as "production"): "Production"`},
		"environment name with a trailing space":   {yaml: "environments:\n  - name: 'staging '\n", errLine: 2, errText: "starts or ends with a space"},
		"environment name with a zero-width space": {yaml: "environments:\n  - name: test\n  - name: \"stag\u200bing\"\n", errLine: 3, errText: "invisible character U+200B"},
		"environment name with a soft hyphen":      {yaml: "environments:\n  - name: \"pro\u00adduction\"\n", errLine: 2, errText: "invisible character U+00AD"},
		"environment as an alias":                  {yaml: "environments:\n  - &t name: test\n  - *t\n", errLine: 3, errText: "an alias (*t) in environments"},
		"a second document":                        {yaml: "environments:\n  - name: test\n---\nbogus: 1\n", errLine: 3, errText: "a second YAML document"},
		"a broken second document":                 {yaml: "environments:\n  - name: test\n---\n[ unclosed\n", errText: "not valid YAML"},
		"not UTF-8":                                {yaml: "environments:\n  - name: caf\xe9\n", errLine: 2, errText: "not UTF-8"},
		"a control character":                      {yaml: "environments:\n  - name: test\n\x07\n", errLine: 3, errText: "control character U+0007"},
		"empty list":                               {yaml: "environments: []\n", errLine: 1, errText: "at least one environment"},
		"no environments":                          {yaml: "branch: main\n", errLine: 1, errText: "environments is required"},
		"environments not a list":                  {yaml: "environments: production\n", errLine: 1, errText: "must be a list"},
		"environment not a mapping":                {yaml: "environments:\n  - production\n", errLine: 2, errText: "must be a mapping"},
		"environment without a name":               {yaml: "environments:\n  - production: true\n", errLine: 2, errText: "has no name"},
		"name of the wrong type":                   {yaml: "environments:\n  - name: [a]\n", errLine: 2, errText: "name must be a string"},
		"name a number":                            {yaml: "environments:\n  - name: 12\n", errLine: 2, errText: "name must be a string"},
		"production not a boolean":                 {yaml: "environments:\n  - name: a\n    production: yes please\n", errLine: 3, errText: "true or false"},
		"contexts not a list":                      {yaml: "required_contexts: build\nenvironments:\n  - name: a\n", errLine: 1, errText: "list of strings"},
		"context repeated":                         {yaml: "required_contexts: [a, a]\nenvironments:\n  - name: a\n", errLine: 1, errText: `required_contexts lists an entry twice (first on line 1): "a"`},
		"context repeated in another case": {yaml: "required_contexts: [Build, build]\nenvironments:\n  - name: a\n", errLine: 1,
			errText: `required_contexts lists an entry twice, ignoring case as GitHub does (first on line 1 as "Build"): "build"`},
		"context repeated in another case, a line each": {yaml: "required_contexts:\n  - ci/Lint\n  - build\n  - CI/lint\nenvironments:\n  - name: a\n", errLine: 4,
			errText: `(first on line 2 as "ci/Lint"): "CI/lint"`},
		"branch given as a ref":       {yaml: "branch: refs/heads/main\nenvironments:\n  - name: a\n", errLine: 1, errText: "without refs/heads/"},
		"not YAML":                    {yaml: "environments:\n  - name: a\n  bad: [\n", errText: "not valid YAML"},
		"empty file":                  {yaml: "", errText: "empty"},
		"a list at the top":           {yaml: "- name: a\n", errLine: 1, errText: "must be a mapping"},
		"control character in a name": {yaml: "environments:\n  - name: \"a\\tb\"\n", errLine: 2, errText: "control character"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseConfig([]byte(tc.yaml))
			if tc.want != nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("got %+v, want %+v", got, tc.want)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v (%T), want a ConfigError", err, err)
			}
			if tc.errLine != 0 && ce.Line != tc.errLine {
				t.Errorf("line %d, want %d (%v)", ce.Line, tc.errLine, err)
			}
			if !strings.Contains(err.Error(), tc.errText) || !strings.Contains(err.Error(), ConfigPath) {
				t.Errorf("error %q lacks %q", err, tc.errText)
			}
		})
	}
}

// Every string of the file (a branch, a required context, an environment
// name) is refused with its line when it holds a control character, a line
// separator or a bidirectional control: such text ends up in logs and on
// GitHub's pages, where it can start a line or show in another order.
func TestParseConfigRefusesControlCharacters(t *testing.T) {
	for name, tc := range map[string]struct {
		field string // YAML with %s where the quoted value goes
		value string
		line  int
		want  string
	}{
		"newline in the branch":             {field: "branch: %s\nenvironments:\n  - name: a\n", value: "ma\nin", line: 1, want: `branch contains the control character U+000A: "ma\nin"`},
		"tab in the branch":                 {field: "branch: %s\nenvironments:\n  - name: a\n", value: "ma\tin", line: 1, want: "U+0009"},
		"DEL in the branch":                 {field: "branch: %s\nenvironments:\n  - name: a\n", value: "main\x7f", line: 1, want: "U+007F"},
		"escape in a required context":      {field: "required_contexts:\n  - build\n  - %s\nenvironments:\n  - name: a\n", value: "ci\x1b[2J", line: 3, want: "control character U+001B"},
		"C1 in a required context":          {field: "required_contexts: [build, %s]\nenvironments:\n  - name: a\n", value: "ci\u0085", line: 1, want: "control character U+0085"},
		"RLO in a required context":         {field: "required_contexts:\n  - %s\nenvironments:\n  - name: a\n", value: "ci\u202e", line: 2, want: "bidirectional control U+202E"},
		"newline in an environment name":    {field: "environments:\n  - name: test\n  - name: %s\n", value: "prod\n::warning::x", line: 3, want: "control character U+000A"},
		"C1 CSI in an environment name":     {field: "environments:\n  - name: %s\n", value: "prod\u009b31m", line: 2, want: "control character U+009B"},
		"NEL in an environment name":        {field: "environments:\n  - name: %s\n", value: "prod\u0085", line: 2, want: "control character U+0085"},
		"LRE in an environment name":        {field: "environments:\n  - name: %s\n", value: "\u202aprod", line: 2, want: "bidirectional control U+202A"},
		"RLO in an environment name":        {field: "environments:\n  - name: %s\n", value: "staging\u202edorp", line: 2, want: "bidirectional control U+202E"},
		"LRI in an environment name":        {field: "environments:\n  - name: %s\n", value: "\u2066prod", line: 2, want: "U+2066"},
		"PDI in an environment name":        {field: "environments:\n  - name: %s\n", value: "prod\u2069", line: 2, want: "U+2069"},
		"LRM in an environment name":        {field: "environments:\n  - name: %s\n", value: "prod\u200e", line: 2, want: "U+200E"},
		"RLM in an environment name":        {field: "environments:\n  - name: %s\n", value: "prod\u200f", line: 2, want: "U+200F"},
		"ALM in an environment name":        {field: "environments:\n  - name: %s\n", value: "prod\u061c", line: 2, want: "U+061C"},
		"line separator in an environment":  {field: "environments:\n  - name: %s\n", value: "prod\u2028x", line: 2, want: "line break U+2028"},
		"paragraph separator in a context":  {field: "required_contexts: [%s]\nenvironments:\n  - name: a\n", value: "ci\u2029", line: 1, want: "line break U+2029"},
		"carriage return in an environment": {field: "environments:\n  - name: %s\n", value: "prod\rx", line: 2, want: "U+000D"},
	} {
		t.Run(name, func(t *testing.T) {
			doc := fmt.Sprintf(tc.field, strconv.Quote(tc.value))
			c, err := ParseConfig([]byte(doc))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig(%q) = %+v, %v; want a ConfigError", doc, c, err)
			}
			if ce.Line != tc.line || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q (line %d), want line %d and %q", err, ce.Line, tc.line, tc.want)
			}
		})
	}
}

// A branch must be a name git accepts (git check-ref-format --branch): one
// it refuses can never be pushed, so every push would be ignored.
func TestParseConfigBranchNames(t *testing.T) {
	for _, ok := range []string{"main", "release/v1.2", "feature/x-y_z", "a.b", "@x", "x@y", "v1.lockdown", "über", "a/b/c", "a-", "a+b", "a{b}"} {
		c, err := ParseConfig([]byte("branch: " + strconv.Quote(ok) + "\nenvironments:\n  - name: a\n"))
		if err != nil || c.Branch != ok {
			t.Errorf("branch %q: %+v, %v; want it accepted", ok, c, err)
		}
	}
	for bad, want := range map[string]string{
		"refs/heads/main": "without refs/heads/",
		"ma in":           `cannot hold " "`,
		"main~1":          `cannot hold "~"`,
		"main^":           `cannot hold "^"`,
		"a:b":             `cannot hold ":"`,
		"a?":              `cannot hold "?"`,
		"a*":              `cannot hold "*"`,
		"a[b":             `cannot hold "["`,
		`a\b`:             `cannot hold "\\"`,
		"a..b":            `".."`,
		"a@{1}":           `"@{"`,
		"@":               "git refuses @ as a branch name",
		"HEAD":            "git refuses HEAD as a branch name",
		"-main":           "starts with -",
		"/main":           "starts or ends with /",
		"main/":           "starts or ends with /",
		"a//b":            `"//"`,
		"main.":           "ends with a dot",
		".main":           `starts with . (".main")`,
		"a/.b/c":          `starts with . (".b")`,
		"main.lock":       `ends with .lock ("main.lock")`,
		"a.lock/b":        `ends with .lock ("a.lock")`,
		"ma\u200bin":      "the invisible character U+200B (ZERO WIDTH SPACE) reads as another",
		"\ufeffmain":      "the invisible character U+FEFF",
	} {
		_, err := ParseConfig([]byte("environments:\n  - name: a\nbranch: " + strconv.Quote(bad) + "\n"))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Line != 3 || !strings.Contains(err.Error(), want) {
			t.Errorf("branch %q: %v; want a ConfigError on line 3 with %q", bad, err, want)
		}
	}
}

// A configuration lists at most MaxEnvironments environments: one more is
// refused on the list's line; as many is a pipeline.
func TestParseConfigBoundsTheEnvironments(t *testing.T) {
	doc := func(n int) string {
		var b strings.Builder
		b.WriteString("branch: main\nenvironments:\n")
		for i := range n {
			fmt.Fprintf(&b, "  - name: stage-%d\n", i)
		}
		return b.String()
	}
	c, err := ParseConfig([]byte(doc(MaxEnvironments)))
	if err != nil {
		t.Fatalf("%d environments: %v", MaxEnvironments, err)
	}
	if len(c.Environments) != MaxEnvironments || !c.Environments[MaxEnvironments-1].Production {
		t.Errorf("%d environments: got %+v", MaxEnvironments, c.Environments)
	}
	_, err = ParseConfig([]byte(doc(MaxEnvironments + 1)))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("%d environments: got %v, want a ConfigError", MaxEnvironments+1, err)
	}
	want := fmt.Sprintf("environments lists %d environments: lastmile promotes through at most %d", MaxEnvironments+1, MaxEnvironments)
	if ce.Line != 3 || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v (line %d), want line 3 and %q", err, ce.Line, want)
	}
}

// YAML reads U+0085, U+2028, U+2029 and a lone carriage return as line
// breaks; git and GitHub's pages break lines at newlines only. Such a
// character in a comment would hide a setting after it, on what shows as
// the comment's line: the file is refused, on the character's line, as it
// is for any character UnsafeRune reports, anywhere in the file.
func TestParseConfigRefusesHiddenLineBreaks(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml string
		line int
		want string
	}{
		"line separator in a comment hides production: false": {
			yaml: "environments:\n  - name: test\n  - name: production # reviewed\u2028    production: false\n",
			line: 3, want: "contains U+2028 (LINE SEPARATOR), which YAML reads as a line break but GitHub shows as none: remove it"},
		"line separator in a comment hides an environment": {
			yaml: "environments:\n  - name: staging # \u2028  - name: canary\n  - name: production\n", line: 2, want: "U+2028 (LINE SEPARATOR)"},
		"next line in a comment hides a second branch": {
			yaml: "branch: main # keep\u0085branch: x\nenvironments:\n  - name: a\n", line: 1, want: "contains U+0085 (NEXT LINE), which YAML reads as a line break"},
		"paragraph separator in a comment": {
			yaml: "environments:\n  - name: a # x\u2029  - name: b\n", line: 2, want: "U+2029 (PARAGRAPH SEPARATOR)"},
		"line separator in a comment before another error": {
			yaml: "# owners: a\u2028# b\nenvironments:\n  - name: a\n  - nme: b\n", line: 1, want: "U+2028"},
		"line separator in a quoted value": {
			yaml: "environments:\n  - name: 'a\u2028b'\n", line: 2, want: "U+2028 (LINE SEPARATOR)"},
		"C1 control in a comment": {
			yaml: "environments:\n  - name: a\n# \u0080\n", line: 3, want: "control character U+0080: remove it"},
		"C1 CSI in a comment": {
			yaml: "# \u009b31m\nenvironments:\n  - name: a\n", line: 1, want: "control character U+009B"},
		"C1 CSI in a plain value": {
			yaml: "environments:\n  - name: a\n  - name: prod\u009b\n", line: 3, want: "control character U+009B"},
		"bidirectional override in a comment": {
			yaml: "environments:\n  - name: a # \u202e\n", line: 2, want: "bidirectional control U+202E (RIGHT-TO-LEFT OVERRIDE)"},
		"isolate in a comment": {
			yaml: "# \u2066x\u2069\nenvironments:\n  - name: a\n", line: 1, want: "U+2066 (LEFT-TO-RIGHT ISOLATE)"},
		"noncharacter U+FFFE": {
			yaml: "environments:\n  - name: a\n# \ufffe\n", line: 3, want: "noncharacter U+FFFE"},
		"noncharacter U+FFFF": {
			yaml: "environments:\n  - name: a\uffff\n", line: 2, want: "noncharacter U+FFFF"},
		"lone carriage returns end the lines": {
			yaml: "environments:\r  - name: a\r  - nme: b\r", line: 1, want: "contains a lone carriage return (U+000D), which YAML reads as a line break"},
		"a lone carriage return in a comment": {
			yaml: "environments:\n  - name: production # ok\r    production: false\n", line: 2, want: "carriage return"},
		"escape in a comment": {
			yaml: "environments:\n  - name: a\n# \x1b[2J\n", line: 3, want: "control character U+001B"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig(%q) = %+v, %v; want a ConfigError", tc.yaml, c, err)
			}
			if ce.Line != tc.line || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q (line %d), want line %d and %q", err, ce.Line, tc.line, tc.want)
			}
		})
	}
	// Line endings of \r\n, tabs and text other than those characters, in
	// comments too, are plain text.
	for name, tc := range map[string]struct {
		yaml string
		want *Config
		line int // of the error, when there is one
	}{
		"CRLF line endings": {yaml: "environments:\r\n  - name: a\r\n  - name: b\r\n",
			want: &Config{RequiredContexts: []string{}, Environments: []Environment{{Name: "a"}, {Name: "b", Production: true}}}},
		"CRLF line endings, an error's line": {yaml: "environments:\r\n  - name: a\r\n  - nme: b\r\n", line: 3},
		"tab and letters in a comment": {yaml: "# owners:\tprödüction 🚀 \u00a0\nenvironments:\n  - name: a\n",
			want: &Config{RequiredContexts: []string{}, Environments: []Environment{{Name: "a", Production: true}}}},
	} {
		c, err := ParseConfig([]byte(tc.yaml))
		if tc.want != nil {
			if err != nil || !reflect.DeepEqual(c, tc.want) {
				t.Errorf("%s: got %+v, %v; want %+v", name, c, err, tc.want)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Line != tc.line {
			t.Errorf("%s: got %v; want an error on line %d", name, err, tc.line)
		}
	}
}

// The lastmile/config commit status keeps 140 characters of a description:
// it says what is wrong first, with the file's text shortened in the
// middle, and leaves out the file's path (the context names it), so that
// what is wrong is never what is cut off. Error keeps everything, for the
// log and the release's record.
func TestConfigErrorDescription(t *testing.T) {
	long := "production-eu-west-1-canary-blue-green-rollout-42-with-a-longer-tail"
	for name, tc := range map[string]struct {
		yaml string
		want []string // in the description
		full []string // in Error, besides
	}{
		"a long environment name with an invisible character": {
			yaml: "environments:\n  - name: test\n  - name: \"production-eu-west-1-canary-\u200bblue-green-rollout-42\"\n",
			want: []string{"line 3: environment name contains the invisible character U+200B (ZERO WIDTH SPACE): \"production-eu-west-", "…", "rollout-42\""},
			full: []string{`"production-eu-west-1-canary-\u200bblue-green-rollout-42"`}},
		"a very long environment name": {
			yaml: "environments:\n  - name: " + strings.Repeat("x", 300) + "\n",
			want: []string{"line 2: environment name is longer than 255 characters: \"xxx", "…"},
			full: []string{strings.Repeat("x", 300)}},
		"a long name with a trailing space": {
			yaml: "environments:\n  - name: '" + long + " '\n",
			want: []string{"line 2: environment name starts or ends with a space: \"production-", "tail \""},
			full: []string{long + " "}},
		"a long name listed twice in another case": {
			yaml: "environments:\n  - name: " + long + "\n  - name: " + strings.ToUpper(long) + "\n",
			want: []string{"line 3: environment listed twice, ignoring case as GitHub does (first on line 2 as \"production-", "…", "onger-tail\"): \"PRODUCTION-"},
			full: []string{`first on line 2 as "` + long + `"): "` + strings.ToUpper(long) + `"`}},
		"a long name listed twice": {
			yaml: "environments:\n  - name: " + long + "\n  - name: " + long + "\n",
			want: []string{"line 3: environment listed twice (first on line 2): \"production-eu-west-", "…", "-tail\""},
			full: []string{long}},
		"a long branch git refuses": {
			yaml: "branch: 'release/2024-q3/hotfix-for-the-payment-service-timeouts-and-retries..x'\nenvironments:\n  - name: a\n",
			want: []string{`line 1: branch: git refuses ".." in a branch name: "release/2024-q3/`, `retries..x"`},
			full: []string{"release/2024-q3/hotfix-for-the-payment-service-timeouts-and-retries..x"}},
		"a long part of a branch git refuses": {
			yaml: "branch: 'release/" + long + ".lock'\nenvironments:\n  - name: a\n",
			want: []string{`line 1: branch: git refuses a part of a branch name that ends with .lock ("production-`, `tail.lock")`},
			full: []string{`("` + long + `.lock")`}},
		"a long required context with a bidirectional control": {
			yaml: "required_contexts:\n  - \"ci / build-and-test (ubuntu-latest, go 1.26, race detector on)\\u202e\"\nenvironments:\n  - name: a\n",
			want: []string{"line 2: required_contexts entry contains the bidirectional control U+202E (RIGHT-TO-LEFT OVERRIDE): \"ci / build", "detector on)\\u202e\""},
			full: []string{`"ci / build-and-test (ubuntu-latest, go 1.26, race detector on)\u202e"`}},
		"a long required context listed twice": {
			yaml: "required_contexts:\n  - \"ci / build-and-test (ubuntu-latest, go 1.26, race detector on)\"\n  - \"ci / build-and-test (ubuntu-latest, go 1.26, race detector on)\"\nenvironments:\n  - name: a\n",
			want: []string{`line 3: required_contexts lists an entry twice (first on line 2): "ci / build-and-test`, `detector on)"`},
			full: []string{`"ci / build-and-test (ubuntu-latest, go 1.26, race detector on)"`}},
		"a long unknown key": {
			yaml: "environments:\n  - name: a\n" + strings.Repeat("k", 300) + ": 1\n",
			want: []string{`line 3: unknown key "kkk`, "…", `kkk" (allowed here: branch, required_contexts, deployments, environments)`},
			full: []string{strings.Repeat("k", 300)}},
		"a long alias": {
			yaml: "environments:\n  - &" + strings.Repeat("a", 200) + " name: test\n  - *" + strings.Repeat("a", 200) + "\n",
			want: []string{"line 3: an alias (*aaa", "…", "aaa) in environments: write each environment out, once"},
			full: []string{strings.Repeat("a", 200)}},
		"a line separator in a comment": {
			yaml: "environments:\n  - name: production # reviewed\u2028    production: false\n",
			want: []string{"line 2: contains U+2028 (LINE SEPARATOR), which YAML reads as a line break but GitHub shows as none: remove it"}},
		"an empty file": {yaml: "", want: []string{"the file is empty: it must list environments"}},
		"a lone carriage return, far down": {
			yaml: "environments:\n  - name: a\n" + strings.Repeat("#\n", 2000) + "# x\r",
			want: []string{"line 2003: contains a lone carriage return (U+000D), which YAML reads as a line break but git and GitHub do not: end lines with a newline"}},
		"a bidirectional isolate, far down": {
			yaml: "environments:\n  - name: a\n" + strings.Repeat("#\n", 2000) + "# \u2068x\n",
			want: []string{"line 2003: contains the bidirectional control U+2068 (FIRST STRONG ISOLATE), which makes text show in another order: remove it"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a ConfigError", err)
			}
			d := ce.Description(140)
			if n := utf8.RuneCountInString(d); n > 140 {
				t.Errorf("description of %d characters: %q", n, d)
			}
			if strings.Contains(d, ConfigPath) {
				t.Errorf("description %q names the file: the status's context does", d)
			}
			for _, w := range tc.want {
				if !strings.Contains(d, w) {
					t.Errorf("description %q lacks %q", d, w)
				}
			}
			for _, w := range tc.full {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// GitHub takes environment names of up to 255 characters — characters, not
// bytes: a name of 130 é (260 bytes) is one.
func TestParseConfigEnvironmentNameLength(t *testing.T) {
	for name, tc := range map[string]struct {
		name string
		ok   bool
	}{
		"255 ASCII letters":            {strings.Repeat("a", 255), true},
		"256 ASCII letters":            {strings.Repeat("a", 256), false},
		"130 é, 260 bytes":             {strings.Repeat("é", 130), true},
		"100 katakana, 300 bytes":      {strings.Repeat("プ", 100), true},
		"255 é, 510 bytes":             {strings.Repeat("é", 255), true},
		"256 é":                        {strings.Repeat("é", 256), false},
		"254 letters and a rocket":     {strings.Repeat("a", 254) + "🚀", true},
		"255 letters and a rocket too": {strings.Repeat("a", 255) + "🚀", false},
	} {
		c, err := ParseConfig([]byte("environments:\n  - name: " + tc.name + "\n"))
		if tc.ok {
			if err != nil || c.Environments[0].Name != tc.name {
				t.Errorf("%s: %v; want it accepted", name, err)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Line != 2 || !strings.Contains(err.Error(), "environment name is longer than 255 characters") {
			t.Errorf("%s: %v; want it refused on line 2 as longer than 255 characters", name, err)
		}
	}
}

// The duplicate check folds case as Index does (sameEnvironment): two
// environments it lets through are two to Index, and a protection-rule
// request for one is never judged as the other. staging and ſtaging
// (U+017F LATIN SMALL LETTER LONG S) were both listed, and Index("ſtaging")
// was staging's.
func TestParseConfigDuplicatesFoldAsIndexDoes(t *testing.T) {
	for name, tc := range map[string]struct {
		first, second string
		dup           bool
	}{
		"long s":             {"staging", "ſtaging", true},
		"Kelvin sign":        {"kube", "\u212Aube", true},
		"final sigma":        {"ασ", "ας", true},
		"capital sigma":      {"ΑΣ", "ας", true},
		"accented capital":   {"prödüction", "PRÖDÜCTION", true},
		"ASCII case":         {"production", "Production", true},
		"titlecase digraph":  {"ǆemal", "ǅemal", true},
		"sharp s is not ss":  {"straße", "strasse", false},
		"dotless i is not i": {"ıd", "id", false},
		// İ folds to no other letter, but its lower case is i: the engine
		// keys environments by their lower case.
		"dotted capital I is i in lower case": {"id", "İd", true},
		"composed and decomposed":             {"caf\u00e9", "cafe\u0301", false},
		"different letters":                   {"staging", "stating", false},
		"accented and not":                    {"prod", "pröd", false},
	} {
		doc := "environments:\n  - name: " + tc.first + "\n  - name: " + tc.second + "\n  - name: production-x\n"
		c, err := ParseConfig([]byte(doc))
		if tc.dup {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Line != 3 || !strings.Contains(err.Error(), "environment listed twice") {
				t.Errorf("%s: %+v, %v; want %q refused on line 3 as listed twice", name, c, err, tc.second)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v; want both accepted", name, err)
			continue
		}
		for i, e := range c.Environments {
			if got := c.Index(e.Name); got != i {
				t.Errorf("%s: Index(%q) = %d, want %d", name, e.Name, got, i)
			}
		}
	}
}

// A value of the file in a message formats as the string it is would, for
// every verb and flag (and only Description cuts it).
func TestConfigValueFormatsAsAString(t *testing.T) {
	for _, f := range []string{"%q", "%+q", "%#q", "%s", "%v", "%10s", "%-10s|", "%x"} {
		if got, want := fmt.Sprintf(f, value("é\u200bx")), fmt.Sprintf(f, "é\u200bx"); got != want {
			t.Errorf("%s: %s, want %s", f, got, want)
		}
	}
}
