package action_test

import (
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/lastmile-app/lastmile/action"
	"github.com/lastmile-app/lastmile/pipeline"
)

// actionStep is a step of a workflow job or of a composite action.
type actionStep struct {
	ID               string            `yaml:"id"`
	Name             string            `yaml:"name"`
	Uses             string            `yaml:"uses"`
	Run              string            `yaml:"run"`
	Shell            string            `yaml:"shell"`
	With             map[string]any    `yaml:"with"`
	Env              map[string]string `yaml:"env"`
	WorkingDirectory string            `yaml:"working-directory"`
}

type actionMetadata struct {
	Name        string            `yaml:"name"`
	Description string            `yaml:"description"`
	Author      string            `yaml:"author"`
	Branding    map[string]string `yaml:"branding"`
	Inputs      map[string]struct {
		Description string `yaml:"description"`
		Required    bool   `yaml:"required"`
		Default     string `yaml:"default"`
	} `yaml:"inputs"`
	Outputs map[string]struct {
		Description string `yaml:"description"`
		Value       string `yaml:"value"`
	} `yaml:"outputs"`
	Runs struct {
		Using string       `yaml:"using"`
		Steps []actionStep `yaml:"steps"`
	} `yaml:"runs"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The inputs action.yml declares, with the INPUT_ variable the runner would
// name for each ("INPUT_" + upper-cased name, spaces to underscores, hyphens
// kept) and that action.yml must set itself, a composite action getting none
// from the runner.
var wantInputs = map[string]string{
	"mode":                 "INPUT_MODE",
	"command":              "INPUT_COMMAND",
	"pass-environment-arg": "INPUT_PASS-ENVIRONMENT-ARG",
	"environment-url":      "INPUT_ENVIRONMENT-URL",
	"job-id":               "INPUT_JOB-ID",
	"token":                "INPUT_TOKEN",
	"require-lastmile":     "INPUT_REQUIRE-LASTMILE",
}

func TestActionMetadata(t *testing.T) {
	var a actionMetadata
	readYAML(t, "action.yml", &a)
	if a.Runs.Using != "composite" {
		t.Fatalf("runs.using %q, want composite", a.Runs.Using)
	}
	if got, want := slices.Sorted(maps.Keys(a.Inputs)), slices.Sorted(maps.Keys(wantInputs)); !slices.Equal(got, want) {
		t.Fatalf("inputs %v, want %v (update the test and Run together)", got, want)
	}
	for name, def := range map[string]string{
		"mode":                 "deploy",
		"pass-environment-arg": "false",
		"job-id":               "${{ job.check_run_id }}",
		"token":                "${{ github.token }}",
		"require-lastmile":     "true",
	} {
		if got := a.Inputs[name].Default; got != def {
			t.Errorf("input %s default %q, want %q", name, got, def)
		}
	}

	// Go comes from actions/setup-go, at the version of the repository's go.mod.
	steps := a.Runs.Steps
	if len(steps) != 3 {
		t.Fatalf("%d steps, want setup-go, build, run", len(steps))
	}
	if !strings.HasPrefix(steps[0].Uses, "actions/setup-go@") {
		t.Errorf("first step uses %q, want actions/setup-go", steps[0].Uses)
	}
	if got := steps[0].With["go-version-file"]; got != "${{ github.action_path }}/../go.mod" {
		t.Errorf("go-version-file %v, want the repository's go.mod", got)
	}
	if _, err := os.Stat(filepath.Join("..", "go.mod")); err != nil {
		t.Errorf("action_path/../go.mod: %v", err)
	}
	if !strings.Contains(steps[1].Run, "go build") || !strings.Contains(steps[1].Run, "./cmd/lastmile-action") {
		t.Errorf("build step runs %q", steps[1].Run)
	}
	if _, err := os.Stat(filepath.Join("..", "cmd", "lastmile-action", "main.go")); err != nil {
		t.Errorf("the entry point: %v", err)
	}

	// Inputs reach the program through env:, never through the script.
	var runStep *actionStep
	for i, s := range steps {
		if s.Run == "" {
			continue
		}
		if s.Shell == "" {
			t.Errorf("step %q: a composite run step needs shell:", s.Name)
		}
		if strings.Contains(s.Run, "${{") {
			t.Errorf("step %q has an expression inside run:\n%s", s.Name, s.Run)
		}
		if s.ID == "run" {
			runStep = &steps[i]
		}
	}
	if runStep == nil {
		t.Fatal("no step with id run")
	}
	if !strings.Contains(runStep.Run, "lastmile-action") {
		t.Errorf("step run runs %q", runStep.Run)
	}
	for name, env := range wantInputs {
		if env != action.InputEnvName(name) {
			t.Fatalf("InputEnvName(%q) = %q, want %q", name, action.InputEnvName(name), env)
		}
		if got, want := runStep.Env[env], "${{ inputs."+name+" }}"; got != want {
			t.Errorf("run step env %s = %q, want %q", env, got, want)
		}
	}
	for k, v := range runStep.Env {
		if strings.Contains(v, "${{") && !strings.HasPrefix(k, "INPUT_") {
			t.Errorf("run step env %s = %q: only inputs come from expressions", k, v)
		}
	}

	// Outputs are the run step's.
	for _, name := range []string{"state", "skipped", "log-url"} {
		if got, want := a.Outputs[name].Value, "${{ steps.run.outputs."+name+" }}"; got != want {
			t.Errorf("output %s value %q, want %q", name, got, want)
		}
	}
	if len(a.Outputs) != 3 {
		t.Errorf("outputs %v", slices.Sorted(maps.Keys(a.Outputs)))
	}
}

type workflowFile struct {
	Name        string            `yaml:"name"`
	On          any               `yaml:"on"`
	Permissions map[string]string `yaml:"permissions"`
	Jobs        map[string]struct {
		Name        string `yaml:"name"`
		If          string `yaml:"if"`
		RunsOn      any    `yaml:"runs-on"`
		Needs       any    `yaml:"needs"`
		Environment any    `yaml:"environment"`
		Concurrency *struct {
			Group            string `yaml:"group"`
			CancelInProgress any    `yaml:"cancel-in-progress"`
		} `yaml:"concurrency"`
		Steps []actionStep `yaml:"steps"`
	} `yaml:"jobs"`
}

var lastmileAction = regexp.MustCompile(`^[A-Za-z0-9-]+/lastmile/action@v1$`)

func TestExampleWorkflow(t *testing.T) {
	var a actionMetadata
	readYAML(t, "action.yml", &a)
	var wf workflowFile
	readYAML(t, filepath.Join("examples", "deploy.yml"), &wf)

	if wf.On != "deployment" {
		t.Errorf("on: %v, want deployment", wf.On)
	}
	if want := map[string]string{"deployments": "write", "contents": "read"}; !maps.Equal(wf.Permissions, want) {
		t.Errorf("permissions %v, want %v", wf.Permissions, want)
	}
	if got := slices.Sorted(maps.Keys(wf.Jobs)); !slices.Equal(got, []string{"deploy", "register"}) {
		t.Fatalf("jobs %v, want register and deploy", got)
	}

	// Every step: no expression inside run:, and the Action gets its inputs
	// through with:, only inputs it declares. Every job runs only for
	// lastmile's deployments (their payload carries its marker,
	// pipeline.DeploymentPayload).
	key, _, _ := strings.Cut(reflect.TypeFor[pipeline.DeploymentPayload]().Field(0).Tag.Get("json"), ",")
	onlyLastmiles := "github.event.deployment.payload." + key
	uses := map[string][]actionStep{}
	for job, j := range wf.Jobs {
		if j.If != onlyLastmiles {
			t.Errorf("job %s if: %q, want %s", job, j.If, onlyLastmiles)
		}
		if rs, ok := j.RunsOn.(string); !ok || !strings.HasPrefix(rs, "ubuntu-") {
			t.Errorf("job %s runs-on %v, want a GitHub-hosted Ubuntu runner", job, j.RunsOn)
		}
		for _, s := range j.Steps {
			if strings.Contains(s.Run, "${{") {
				t.Errorf("job %s: expression inside run:\n%s", job, s.Run)
			}
			// The checkout must not leave the job's token in .git/config,
			// in the deploy command's reach.
			if strings.HasPrefix(s.Uses, "actions/checkout@") && s.With["persist-credentials"] != false {
				t.Errorf("job %s: actions/checkout without persist-credentials: false", job)
			}
			if !lastmileAction.MatchString(s.Uses) {
				continue
			}
			uses[job] = append(uses[job], s)
			for k := range s.With {
				if _, ok := a.Inputs[k]; !ok {
					t.Errorf("job %s passes %q, which action.yml does not declare", job, k)
				}
			}
			for k := range s.Env {
				if strings.HasPrefix(k, "INPUT_") {
					t.Errorf("job %s sets %s: inputs go through with:", job, k)
				}
			}
		}
	}

	reg := wf.Jobs["register"]
	if reg.Environment != nil {
		t.Errorf("register job has environment %v: it must run ungated", reg.Environment)
	}
	if len(uses["register"]) != 1 || uses["register"][0].With["mode"] != "register" {
		t.Errorf("register job's lastmile steps %+v, want one with mode: register", uses["register"])
	}

	dep := wf.Jobs["deploy"]
	if needs, _ := dep.Needs.(string); needs != "register" {
		if list, ok := dep.Needs.([]any); !ok || !slices.Contains(list, any("register")) {
			t.Errorf("deploy job needs %v, want register", dep.Needs)
		}
	}
	env, ok := dep.Environment.(map[string]any)
	if !ok {
		t.Fatalf("deploy job environment %v, want a mapping with name and deployment", dep.Environment)
	}
	if env["name"] != "${{ github.event.deployment.environment }}" {
		t.Errorf("environment name %v, want the deployment's environment", env["name"])
	}
	if env["deployment"] != false {
		t.Errorf("environment deployment: %#v, want the boolean false", env["deployment"])
	}
	if c := dep.Concurrency; c == nil || !strings.Contains(c.Group, "${{ github.event.deployment.environment }}") || c.CancelInProgress != false {
		t.Errorf("deploy job concurrency %+v, want a group per environment and cancel-in-progress: false", c)
	}
	if len(uses["deploy"]) != 1 {
		t.Fatalf("deploy job's lastmile steps %+v, want one", uses["deploy"])
	}
	d := uses["deploy"][0]
	if cmd, _ := d.With["command"].(string); cmd == "" {
		t.Errorf("deploy step has no command: %+v", d.With)
	}
	if m, ok := d.With["mode"]; ok && m != "deploy" {
		t.Errorf("deploy step mode %v", m)
	}
	if uses["deploy"][0].Uses != uses["register"][0].Uses {
		t.Errorf("the jobs use different Actions: %s, %s", uses["deploy"][0].Uses, uses["register"][0].Uses)
	}
}

// The README's example is the example workflow.
func TestREADMEShowsExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join("examples", "deploy.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), string(example)) {
		t.Error("README.md does not contain examples/deploy.yml verbatim")
	}
	for name := range wantInputs {
		if !strings.Contains(string(readme), "`"+name+"`") {
			t.Errorf("README.md does not document input %s", name)
		}
	}
}
