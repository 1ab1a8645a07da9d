package pipeline

import (
	"errors"
	"reflect"
	"strings"
	"testing"
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
		"unknown top-level key":   {yaml: "environments:\n  - name: a\nenviroments: []\n", errLine: 3, errText: `unknown key "enviroments"`},
		"unknown environment key": {yaml: "environments:\n  - name: a\n    reviewers: [x]\n", errLine: 3, errText: `unknown key "reviewers"`},
		"duplicate environment":   {yaml: "environments:\n  - name: a\n  - name: b\n  - name: a\n", errLine: 4, errText: `"a" is listed twice (first on line 2)`},
		"duplicate key":           {yaml: "branch: a\nbranch: b\nenvironments:\n  - name: x\n", errLine: 2, errText: `key "branch" appears twice`},
		"duplicate environment in another case": {yaml: "environments:\n  - name: production\n  - name: Production\n", errLine: 3,
			errText: `"Production" is listed twice (first on line 2 as "production": GitHub's environment names ignore case)`},
		"environment name with a trailing space": {yaml: "environments:\n  - name: 'staging '\n", errLine: 2, errText: "starts or ends with a space"},
		"a second document":                      {yaml: "environments:\n  - name: test\n---\nbogus: 1\n", errLine: 3, errText: "a second YAML document"},
		"a broken second document":               {yaml: "environments:\n  - name: test\n---\n[ unclosed\n", errText: "not valid YAML"},
		"not UTF-8":                              {yaml: "environments:\n  - name: caf\xe9\n", errLine: 2, errText: "not UTF-8"},
		"a control character":                    {yaml: "environments:\n  - name: test\n\x07\n", errLine: 3, errText: "control character U+0007"},
		"empty list":                             {yaml: "environments: []\n", errLine: 1, errText: "at least one environment"},
		"no environments":                        {yaml: "branch: main\n", errLine: 1, errText: "environments is required"},
		"environments not a list":                {yaml: "environments: production\n", errLine: 1, errText: "must be a list"},
		"environment not a mapping":              {yaml: "environments:\n  - production\n", errLine: 2, errText: "must be a mapping"},
		"environment without a name":             {yaml: "environments:\n  - production: true\n", errLine: 2, errText: "has no name"},
		"name of the wrong type":                 {yaml: "environments:\n  - name: [a]\n", errLine: 2, errText: "name must be a string"},
		"name a number":                          {yaml: "environments:\n  - name: 12\n", errLine: 2, errText: "name must be a string"},
		"production not a boolean":               {yaml: "environments:\n  - name: a\n    production: yes please\n", errLine: 3, errText: "true or false"},
		"contexts not a list":                    {yaml: "required_contexts: build\nenvironments:\n  - name: a\n", errLine: 1, errText: "list of strings"},
		"context repeated":                       {yaml: "required_contexts: [a, a]\nenvironments:\n  - name: a\n", errLine: 1, errText: `lists "a" twice`},
		"branch given as a ref":                  {yaml: "branch: refs/heads/main\nenvironments:\n  - name: a\n", errLine: 1, errText: "without refs/heads/"},
		"not YAML":                               {yaml: "environments:\n  - name: a\n  bad: [\n", errText: "not valid YAML"},
		"empty file":                             {yaml: "", errText: "empty"},
		"a list at the top":                      {yaml: "- name: a\n", errLine: 1, errText: "must be a mapping"},
		"control character in a name":            {yaml: "environments:\n  - name: \"a\\tb\"\n", errLine: 2, errText: "control character"},
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
