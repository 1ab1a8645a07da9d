package action_test

import (
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
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

// step is the step of the composite with id id.
func (a *actionMetadata) step(t *testing.T, id string) actionStep {
	t.Helper()
	for _, s := range a.Runs.Steps {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("action.yml has no step with id %s", id)
	return actionStep{}
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
	"app":                  "INPUT_APP",
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
	if got, want := slices.Sorted(slices.Values(action.Inputs)), slices.Sorted(maps.Keys(wantInputs)); !slices.Equal(got, want) {
		t.Errorf("action.Inputs %v, want action.yml's %v: the deploy command would get an input's variable", got, want)
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

	// A check of the runner, Go from actions/setup-go at the version of the
	// repository's go.mod, the build, the removal of setup-go's problem
	// matcher, the run.
	steps := a.Runs.Steps
	if len(steps) != 5 {
		t.Fatalf("%d steps, want the runner's check, setup-go, build, removal of the problem matcher, run", len(steps))
	}
	check, setup, build, unmatch := steps[0], steps[1], steps[2], steps[3]
	if check.ID != "runner" || !strings.Contains(check.Run, "RUNNER_OS") {
		t.Errorf("first step %+v, want the runner's check (id runner)", check)
	}
	if setup.ID != "setup-go" || !strings.HasPrefix(setup.Uses, "actions/setup-go@") {
		t.Errorf("second step %+v, want actions/setup-go (id setup-go)", setup)
	}
	if build.ID != "build" {
		t.Errorf("third step %+v, want the build (id build)", build)
	}
	// setup-go's problem matcher (owner "go" in its matchers.json at the
	// pinned commit, v6.5.0) would make error annotations of the deploy
	// command's lines that look like Go's (file.go:12:3: message), and of
	// later steps': removed once the build is done.
	if unmatch.ID != "remove-matcher" || steps[4].ID != "run" {
		t.Errorf("fourth and fifth steps %+v, %+v: want the removal of setup-go's problem matcher after the build, before the run", unmatch, steps[4])
	}
	if out, _, err := runScript(t, unmatch, nil, t.TempDir()); err != nil || out != "::remove-matcher owner=go::\n" {
		t.Errorf("the problem matcher's removal: %v, output %q; want ::remove-matcher owner=go::", err, out)
	}
	// The version the runner's check read from go.mod: in a job with
	// container:, ${{ github.action_path }} is the runner's path, and
	// setup-go runs in the container.
	if got := setup.With["go-version"]; got != "${{ steps.runner.outputs.go-version }}" {
		t.Errorf("setup-go go-version %v, want the runner's check's go-version output", got)
	}
	if got, ok := setup.With["go-version-file"]; ok {
		t.Errorf("setup-go go-version-file %v: setup-go would read it in its own file system", got)
	}
	// setup-go's cache looks for go.sum with a glob that stays inside the
	// workspace, and the action is not there: it would warn and restore
	// nothing in every job.
	if got, ok := setup.With["cache"]; !ok || got != false {
		t.Errorf("setup-go cache: %#v, want the boolean false", got)
	}
	if _, ok := setup.With["cache-dependency-path"]; ok {
		t.Error("setup-go has a cache-dependency-path, with the cache off")
	}
	if _, err := os.Stat(filepath.Join("..", "go.mod")); err != nil {
		t.Errorf("action_path/../go.mod: %v", err)
	}
	if !strings.Contains(build.Run, "go build") || !strings.Contains(build.Run, "./cmd/lastmile-action") {
		t.Errorf("build step runs %q", build.Run)
	}
	// Whatever Go settings the job has in its env:, the binary is built
	// for this runner, from this module.
	for k, v := range map[string]string{
		"GOOS":        "linux",
		"GOARCH":      "${{ steps.runner.outputs.goarch }}",
		"GOWORK":      "off",
		"GOFLAGS":     "-mod=readonly -buildvcs=false",
		"CGO_ENABLED": "0",
	} {
		if build.Env[k] != v {
			t.Errorf("build step env %s = %q, want %q", k, build.Env[k], v)
		}
	}
	if _, err := os.Stat(filepath.Join("..", "cmd", "lastmile-action", "main.go")); err != nil {
		t.Errorf("the entry point: %v", err)
	}

	// Every action used is pinned to a commit's full SHA (GitHub's policy
	// "require actions to be pinned to a full-length commit SHA" covers
	// the actions an action uses), its version in a comment.
	raw, err := os.ReadFile("action.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Uses == "" {
			continue
		}
		if !pinned.MatchString(s.Uses) {
			t.Errorf("step %q uses %s: not pinned to a full commit SHA", s.Name, s.Uses)
		}
		if !regexp.MustCompile(`(?m)^\s*uses: ` + regexp.QuoteMeta(s.Uses) + ` # v\d+\.\d+\.\d+$`).Match(raw) {
			t.Errorf("step %q uses %s without its version in a comment (# vX.Y.Z)", s.Name, s.Uses)
		}
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
	// The job's PATH and GOTOOLCHAIN, as the runner's check recorded
	// them before setup-go, for the deploy command.
	for k, v := range wantJobEnv {
		if got := runStep.Env[k]; got != v {
			t.Errorf("run step env %s = %q, want %q", k, got, v)
		}
	}
	for k, v := range runStep.Env {
		if strings.Contains(v, "${{") && !strings.HasPrefix(k, "INPUT_") && wantJobEnv[k] != v {
			t.Errorf("run step env %s = %q: only inputs and the job's recorded PATH and GOTOOLCHAIN come from expressions", k, v)
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

// wantJobEnv is what the run step passes on of the runner's check: the
// job's PATH and GOTOOLCHAIN from before setup-go.
var wantJobEnv = map[string]string{
	action.EnvJobPath:           "${{ steps.runner.outputs.path }}",
	action.EnvJobGoToolchainSet: "${{ steps.runner.outputs.gotoolchain-set }}",
	action.EnvJobGoToolchain:    "${{ steps.runner.outputs.gotoolchain }}",
}

// runScript runs a run: step's script as the runner does (bash -e), with
// the job's environment job and the step's env: over it, in dir; it returns
// the output and the step outputs written to GITHUB_OUTPUT.
func runScript(t *testing.T, s actionStep, job map[string]string, dir string) (out string, outputs map[string]string, err error) {
	t.Helper()
	bash, lookErr := exec.LookPath("bash")
	if lookErr != nil {
		t.Skip("no bash:", lookErr)
	}
	outFile := filepath.Join(t.TempDir(), "github_output")
	env := map[string]string{"GITHUB_OUTPUT": outFile}
	maps.Copy(env, job)
	maps.Copy(env, s.Env)
	cmd := exec.Command(bash, "--noprofile", "--norc", "-eo", "pipefail", "-c", s.Run)
	cmd.Dir = dir
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	b, err := cmd.CombinedOutput()
	outputs = map[string]string{}
	if o, readErr := os.ReadFile(outFile); readErr == nil {
		// name=value lines, and name<<DELIMITER blocks (GitHub's form for
		// a value that may hold anything).
		lines := strings.Split(strings.TrimSuffix(string(o), "\n"), "\n")
		for i := 0; i < len(lines); i++ {
			l := lines[i]
			if k, delim, ok := strings.Cut(l, "<<"); ok && !strings.Contains(k, "=") {
				var val []string
				for i++; i < len(lines) && lines[i] != delim; i++ {
					val = append(val, lines[i])
				}
				if i == len(lines) {
					t.Errorf("GITHUB_OUTPUT: %s<<%s has no end", k, delim)
				}
				outputs[k] = strings.Join(val, "\n")
				continue
			}
			if k, v, ok := strings.Cut(l, "="); ok {
				outputs[k] = v
			}
		}
	}
	return string(b), outputs, err
}

// The runner's check records the job's PATH and GOTOOLCHAIN (set, even
// empty, or not) before setup-go changes them, and the run step passes
// them on to lastmile-action.
func TestActionRecordsTheJobsPathAndGoToolchain(t *testing.T) {
	var a actionMetadata
	readYAML(t, "action.yml", &a)
	check, run := a.step(t, "runner"), a.step(t, "run")
	path := "/opt/hostedtoolcache/go/1.27.1/x64/bin:/home/runner/go/bin:with=equals:" + os.Getenv("PATH")
	for name, tc := range map[string]struct {
		gotoolchain *string
		want        map[string]string // the run step's LASTMILE_JOB_ variables
	}{
		"GOTOOLCHAIN set": {ptr("go1.27.1+auto"), map[string]string{
			action.EnvJobPath: path, action.EnvJobGoToolchainSet: "true", action.EnvJobGoToolchain: "go1.27.1+auto"}},
		"GOTOOLCHAIN local, from the job's own setup-go": {ptr("local"), map[string]string{
			action.EnvJobPath: path, action.EnvJobGoToolchainSet: "true", action.EnvJobGoToolchain: "local"}},
		"GOTOOLCHAIN empty": {ptr(""), map[string]string{
			action.EnvJobPath: path, action.EnvJobGoToolchainSet: "true", action.EnvJobGoToolchain: ""}},
		"GOTOOLCHAIN unset": {nil, map[string]string{
			action.EnvJobPath: path, action.EnvJobGoToolchainSet: "false", action.EnvJobGoToolchain: ""}},
	} {
		t.Run(name, func(t *testing.T) {
			job := map[string]string{"RUNNER_OS": "Linux", "RUNNER_ARCH": "X64", "PATH": path, "GITHUB_ACTION_PATH": actionPath(t)}
			if tc.gotoolchain != nil {
				job["GOTOOLCHAIN"] = *tc.gotoolchain
			}
			out, outputs, err := runScript(t, check, job, t.TempDir())
			if err != nil || out != "" {
				t.Fatalf("the runner's check: %v\n%s", err, out)
			}
			// ${{ steps.runner.outputs.NAME }} is NAME's output, or "".
			expr := regexp.MustCompile(`^\$\{\{ steps\.runner\.outputs\.([a-z-]+) \}\}$`)
			for k, want := range tc.want {
				m := expr.FindStringSubmatch(run.Env[k])
				if m == nil {
					t.Fatalf("run step env %s = %q", k, run.Env[k])
				}
				if got := outputs[m[1]]; got != want {
					t.Errorf("%s = output %s = %q, want %q (outputs %q)", k, m[1], got, want, outputs)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// actionPath is GITHUB_ACTION_PATH: this directory.
func actionPath(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// goDirective is the version in the go directive of the go.mod at path.
func goDirective(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "go" {
			return f[1]
		}
	}
	t.Fatalf("%s has no go directive", path)
	return ""
}

// The first step refuses runners other than Linux on X64 or ARM64, before
// Go is installed, and names the GOARCH to build for and the Go version
// of lastmile's go.mod, for setup-go.
func TestActionChecksTheRunner(t *testing.T) {
	var a actionMetadata
	readYAML(t, "action.yml", &a)
	check := a.step(t, "runner")
	goVersion := goDirective(t, filepath.Join("..", "go.mod"))
	for _, tc := range []struct {
		os, arch, goarch, refusal string
	}{
		{"Linux", "X64", "amd64", ""},
		{"Linux", "ARM64", "arm64", ""},
		{"Windows", "X64", "", "::error::The lastmile Action runs on Linux runners only, such as runs-on: ubuntu-latest (it stops a cancelled deploy's process group and hides the token as Linux allows); this runner is Windows."},
		{"macOS", "ARM64", "", "::error::The lastmile Action runs on Linux runners only, such as runs-on: ubuntu-latest (it stops a cancelled deploy's process group and hides the token as Linux allows); this runner is macOS."},
		{"Linux", "ARM", "", "::error::The lastmile Action runs on X64 and ARM64 Linux runners; this runner is ARM."},
	} {
		out, outputs, err := runScript(t, check, map[string]string{"RUNNER_OS": tc.os, "RUNNER_ARCH": tc.arch, "GITHUB_ACTION_PATH": actionPath(t)}, t.TempDir())
		if tc.refusal != "" {
			if err == nil || out != tc.refusal+"\n" || len(outputs) != 0 {
				t.Errorf("%s %s: %v, output %q, outputs %v; want a failure with %q", tc.os, tc.arch, err, out, outputs, tc.refusal)
			}
			continue
		}
		if err != nil || out != "" || outputs["goarch"] != tc.goarch || outputs["go-version"] != goVersion {
			t.Errorf("%s %s: %v, output %q, outputs %v; want goarch %s and go-version %s", tc.os, tc.arch, err, out, outputs, tc.goarch, goVersion)
		}
	}
}

// The runner's check reads the Go version from the go directive of
// lastmile's go.mod, as setup-go does with GOTOOLCHAIN=local (which it
// sets before it reads the file): not from a toolchain directive.
func TestActionReadsItsGoVersion(t *testing.T) {
	var a actionMetadata
	readYAML(t, "action.yml", &a)
	check := a.step(t, "runner")
	for name, tc := range map[string]struct {
		gomod, want string // want "": the check fails
	}{
		"go directive":     {gomod: "module example.com/m\n\ngo 1.26.8\n", want: "1.26.8"},
		"with a toolchain": {gomod: "// lastmile\nmodule example.com/m\n\ngo 1.25.3 // comment\n\ntoolchain go1.26.1\n", want: "1.25.3"},
		"minor only":       {gomod: "module example.com/m\ngo 1.26", want: "1.26"}, // and no final line break
		"no go directive":  {gomod: "module example.com/m\n\n// go 1.26.8\ngodebug default=go1.21\n"},
		"no go.mod":        {},
	} {
		t.Run(name, func(t *testing.T) {
			repo := t.TempDir()
			path := filepath.Join(repo, "action")
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.gomod != "" {
				if err := os.WriteFile(filepath.Join(repo, "go.mod"), []byte(tc.gomod), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, outputs, err := runScript(t, check, map[string]string{"RUNNER_OS": "Linux", "RUNNER_ARCH": "X64", "GITHUB_ACTION_PATH": path}, t.TempDir())
			if tc.want == "" {
				if want := "::error::The lastmile Action found no Go version (a go directive) in " + path + "/../go.mod.\n"; err == nil || out != want {
					t.Errorf("%v, output %q; want a failure with %q", err, out, want)
				}
				return
			}
			if err != nil || out != "" || outputs["go-version"] != tc.want {
				t.Errorf("%v, output %q, outputs %q; want go-version %s", err, out, outputs, tc.want)
			}
		})
	}
}

// The build step builds lastmile-action for the runner from this module,
// whatever Go settings the job's env: has: the plain binary, with Go's
// defaults, for X64 and ARM64 runners alike.
func TestActionBuildIgnoresTheJobsGoSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("builds lastmile-action")
	}
	var a actionMetadata
	readYAML(t, "action.yml", &a)
	check, build := a.step(t, "runner"), a.step(t, "build")
	actionPath, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for runnerArch, want := range map[string]struct {
		machine  elf.Machine
		settings map[string]string // the binary's build settings, Go's defaults ("": none)
	}{
		"X64":   {elf.EM_X86_64, map[string]string{"GOAMD64": "v1", "GOEXPERIMENT": "", "GOFIPS140": ""}},
		"ARM64": {elf.EM_AARCH64, map[string]string{"GOARM64": "v8.0", "GOEXPERIMENT": "", "GOFIPS140": ""}},
	} {
		t.Run(runnerArch, func(t *testing.T) {
			tmp := t.TempDir()
			job := map[string]string{
				"RUNNER_OS": "Linux", "RUNNER_ARCH": runnerArch, "RUNNER_TEMP": tmp,
				"GITHUB_ACTION_PATH": actionPath,
				// The job's own settings, for another program (a GOPATH
				// project's GO111MODULE=off among them).
				"GOOS": "windows", "GOARCH": "386", "CGO_ENABLED": "1",
				"GOWORK": filepath.Join(tmp, "go.work"), "GOFLAGS": "-mod=vendor -tags=other",
				"GO111MODULE": "off", "GOEXPERIMENT": "jsonv2", "GOFIPS140": "latest",
				"GOAMD64": "v4", "GOARM64": "v9.0", "GOARM": "5",
			}
			for _, k := range []string{"PATH", "HOME", "GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOTOOLCHAIN"} {
				if v, ok := os.LookupEnv(k); ok {
					job[k] = v
				}
			}
			if err := os.WriteFile(job["GOWORK"], []byte("go 1.26\nuse ./elsewhere\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			out, outputs, err := runScript(t, check, job, tmp)
			if err != nil {
				t.Fatalf("the runner's check: %v\n%s", err, out)
			}
			build.Env = maps.Clone(build.Env)
			build.Env["GOARCH"] = outputs["goarch"] // ${{ steps.runner.outputs.goarch }}
			if out, _, err := runScript(t, build, job, tmp); err != nil {
				t.Fatalf("the build step: %v\n%s", err, out)
			}
			bin := filepath.Join(tmp, "lastmile-action", "lastmile-action")
			f, err := elf.Open(bin)
			if err != nil {
				t.Fatalf("the binary built is not a Linux program: %v", err)
			}
			defer f.Close()
			if f.Machine != want.machine {
				t.Errorf("the binary is for %v, want %v", f.Machine, want.machine)
			}
			info, err := buildinfo.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			settings := map[string]string{}
			for _, s := range info.Settings {
				settings[s.Key] = s.Value
			}
			for k, v := range want.settings {
				if settings[k] != v {
					t.Errorf("the binary was built with %s=%q, want %q", k, settings[k], v)
				}
			}
		})
	}
}

// The job's own settings for its Go (another Go's GOROOT, a build cache
// of its own or GOCACHE=off, a go env file, a GOCACHEPROG, GODEBUG,
// GOFLAGS, GO111MODULE) stop
// neither setup-go (which runs go version, go env GOPATH and go env with
// the Go it installed) nor the build; the build has a cache of its own,
// in RUNNER_TEMP, when the job names one, and Go's default otherwise.
func TestActionGoIgnoresTheJobsGoEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds lastmile-action")
	}
	var a actionMetadata
	readYAML(t, "action.yml", &a)
	check, setup, build := a.step(t, "runner"), a.step(t, "setup-go"), a.step(t, "build")
	actionPath, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	runnerArch := map[string]string{"amd64": "X64", "arm64": "ARM64"}[runtime.GOARCH]
	if runnerArch == "" {
		t.Skipf("no runner is %s", runtime.GOARCH)
	}
	// One RUNNER_TEMP for all the cases: the build cache made there is
	// built from nothing once.
	runnerTemp := t.TempDir()
	ownCache := filepath.Join(runnerTemp, "lastmile-action", "go-build")
	goEnv := filepath.Join(t.TempDir(), "go.env") // `go env -w` for the job's Go
	if err := os.WriteFile(goEnv, []byte("GOEXPERIMENT=nosuchexperiment\nGOFLAGS=-mod=vendor\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	jobCache := filepath.Join(t.TempDir(), "job-go-build")
	for name, tc := range map[string]struct {
		job       map[string]string
		ownCache  bool   // lastmile's build has its own cache
		untouched string // a path lastmile's build must not make
	}{
		"GOROOT of another Go": {job: map[string]string{"GOROOT": "/usr/local/go-1.21"}},
		"GOCACHE off":          {job: map[string]string{"GOCACHE": "off"}, ownCache: true},
		"GOCACHE relative":     {job: map[string]string{"GOCACHE": "go-build"}, ownCache: true},
		"GOCACHE the job's":    {job: map[string]string{"GOCACHE": jobCache}, ownCache: true, untouched: jobCache},
		"GOENV":                {job: map[string]string{"GOENV": goEnv}},
		"GOCACHEPROG":          {job: map[string]string{"GOCACHEPROG": filepath.Join(runnerTemp, "no-such-cacheprog")}},
		"GODEBUG":              {job: map[string]string{"GODEBUG": "gocachehash=1"}}, // would print every hash
		"GOFLAGS":              {job: map[string]string{"GOFLAGS": "-bogus"}},
		"GO111MODULE":          {job: map[string]string{"GO111MODULE": "bogus"}},
		// Go refuses both relative: Go's defaults.
		"GOPATH relative":     {job: map[string]string{"GOPATH": "go"}},
		"GOMODCACHE relative": {job: map[string]string{"GOMODCACHE": "mod"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			job := map[string]string{
				"RUNNER_OS": "Linux", "RUNNER_ARCH": runnerArch, "RUNNER_TEMP": runnerTemp,
				"GITHUB_ACTION_PATH": actionPath,
			}
			for _, k := range []string{"PATH", "HOME", "GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOTOOLCHAIN"} {
				if v, ok := os.LookupEnv(k); ok {
					job[k] = v
				}
			}
			maps.Copy(job, tc.job)
			out, outputs, err := runScript(t, check, job, dir)
			if err != nil {
				t.Fatalf("the runner's check: %v\n%s", err, out)
			}
			// setup-go's own go commands, with GOTOOLCHAIN=local as it
			// sets it (setup-go's src/main.ts, at the pinned commit).
			goCalls := actionStep{Run: "go version >/dev/null\ngo env GOPATH >/dev/null\ngo env >/dev/null", Env: maps.Clone(setup.Env)}
			if goCalls.Env == nil {
				goCalls.Env = map[string]string{}
			}
			goCalls.Env["GOTOOLCHAIN"] = "local"
			if out, _, err := runScript(t, goCalls, job, dir); err != nil {
				t.Errorf("setup-go's go commands: %v\n%s", err, out)
			}
			build := build
			build.Env = maps.Clone(build.Env)
			build.Env["GOARCH"] = outputs["goarch"] // ${{ steps.runner.outputs.goarch }}
			if out, _, err := runScript(t, build, job, dir); err != nil || out != "" {
				if len(out) > 2000 {
					out = out[:2000] + "…"
				}
				t.Fatalf("the build step: %v, output:\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(runnerTemp, "lastmile-action", "lastmile-action")); err != nil {
				t.Errorf("no binary: %v", err)
			}
			if _, err := os.Stat(ownCache); tc.ownCache && err != nil {
				t.Errorf("lastmile's build has no cache of its own in RUNNER_TEMP: %v", err)
			}
			for _, own := range []string{"go-build", "go", "mod"} {
				if _, err := os.Stat(filepath.Join(dir, own)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the build made %s in its working directory (%v)", own, err)
				}
			}
			if tc.untouched != "" {
				if _, err := os.Stat(tc.untouched); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the build wrote to the job's GOCACHE %s (%v)", tc.untouched, err)
				}
			}
		})
	}
}

type workflowFile struct {
	Name        string            `yaml:"name"`
	On          any               `yaml:"on"`
	Permissions map[string]string `yaml:"permissions"`
	Jobs        map[string]struct {
		Name        string            `yaml:"name"`
		If          string            `yaml:"if"`
		RunsOn      any               `yaml:"runs-on"`
		Needs       any               `yaml:"needs"`
		Outputs     map[string]string `yaml:"outputs"`
		Environment any               `yaml:"environment"`
		Concurrency *struct {
			Group            string `yaml:"group"`
			CancelInProgress any    `yaml:"cancel-in-progress"`
		} `yaml:"concurrency"`
		TimeoutMinutes int          `yaml:"timeout-minutes"`
		Steps          []actionStep `yaml:"steps"`
	} `yaml:"jobs"`
}

// pinned is an action reference pinned to a commit.
var pinned = regexp.MustCompile(`^[A-Za-z0-9-]+/[A-Za-z0-9._-]+(/[^@]+)?@[0-9a-f]{40}$`)

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
	// The deploy job runs only for a deployment the register job did not
	// skip (superseded, or finished) — also when the register job failed
	// (not only after its success, needs' default).
	wantIf := map[string]string{"register": onlyLastmiles,
		"deploy": "${{ !cancelled() && " + onlyLastmiles + " && needs.register.outputs.skipped != 'true' }}"}
	for job, j := range wf.Jobs {
		if j.If != wantIf[job] {
			t.Errorf("job %s if: %q, want %s", job, j.If, wantIf[job])
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
			// Other Actions are pinned to a commit, which organisations
			// that require full-SHA pinning need.
			if s.Uses != "" && !lastmileAction.MatchString(s.Uses) && !pinned.MatchString(s.Uses) {
				t.Errorf("job %s uses %s: pin it to a full commit SHA", job, s.Uses)
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
		t.Fatalf("register job's lastmile steps %+v, want one with mode: register", uses["register"])
	}
	if id := uses["register"][0].ID; id == "" || reg.Outputs["skipped"] != "${{ steps."+id+".outputs.skipped }}" {
		t.Errorf("register job outputs %v (step id %q), want skipped from its lastmile step", reg.Outputs, id)
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
	// A deploy that hangs must not hold the environment for GitHub's
	// default of 6 hours before its deployment is left in error.
	if dep.TimeoutMinutes <= 0 || dep.TimeoutMinutes >= 360 {
		t.Errorf("deploy job timeout-minutes %d, want one under GitHub's 360", dep.TimeoutMinutes)
	}
	// Nor a register job whose build stalls, which the deploy job needs.
	if reg := wf.Jobs["register"]; reg.TimeoutMinutes <= 0 || reg.TimeoutMinutes > 30 {
		t.Errorf("register job timeout-minutes %d, want a short one", reg.TimeoutMinutes)
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

// The example of a workflow that owns its deployments (lastmile their
// protection rule): on push to main, one job per environment of the
// README's configuration, in its order, each after the one before, each
// naming its environment without `deployment: false` (GitHub creates the
// job's deployment, and only then asks the environment's custom rule; a
// job with `deployment: false` cannot run under one), the environment
// passed to the deploy command through env:, never inside run:.
func TestExampleWorkflowOwningItsDeployments(t *testing.T) {
	var wf workflowFile
	readYAML(t, filepath.Join("examples", "deploy-on-push.yml"), &wf)
	on, ok := wf.On.(map[string]any)
	push, _ := on["push"].(map[string]any)
	if branches, _ := push["branches"].([]any); !ok || !slices.Equal(branches, []any{"main"}) {
		t.Errorf("on: %v, want push to main", wf.On)
	}
	if want := map[string]string{"contents": "read"}; !maps.Equal(wf.Permissions, want) {
		t.Errorf("permissions %v, want %v", wf.Permissions, want)
	}
	envs := []string{"test", "staging", "production"} // the README's .github/lastmile.yml
	if got := slices.Sorted(maps.Keys(wf.Jobs)); !slices.Equal(got, slices.Sorted(slices.Values(envs))) {
		t.Fatalf("jobs %v, want one per environment %v", got, envs)
	}
	for i, name := range envs {
		j := wf.Jobs[name]
		if j.Environment != name {
			t.Errorf("job %s environment %#v, want the name %q alone (no deployment: false)", name, j.Environment, name)
		}
		var needs any
		if i > 0 {
			needs = envs[i-1]
		}
		if j.Needs != needs {
			t.Errorf("job %s needs %v, want %v", name, j.Needs, needs)
		}
		if rs, ok := j.RunsOn.(string); !ok || !strings.HasPrefix(rs, "ubuntu-") {
			t.Errorf("job %s runs-on %v, want a GitHub-hosted Ubuntu runner", name, j.RunsOn)
		}
		if j.TimeoutMinutes <= 0 || j.TimeoutMinutes >= 360 {
			t.Errorf("job %s timeout-minutes %d, want one under GitHub's 360", name, j.TimeoutMinutes)
		}
		if c := j.Concurrency; c == nil || !strings.Contains(c.Group, name) || c.CancelInProgress != false {
			t.Errorf("job %s concurrency %+v, want a group of its environment and cancel-in-progress: false", name, c)
		}
		deploys := 0
		for _, s := range j.Steps {
			if strings.Contains(s.Run, "${{") {
				t.Errorf("job %s: expression inside run:\n%s", name, s.Run)
			}
			if strings.HasPrefix(s.Uses, "actions/checkout@") && s.With["persist-credentials"] != false {
				t.Errorf("job %s: actions/checkout without persist-credentials: false", name)
			}
			if s.Uses != "" && !pinned.MatchString(s.Uses) {
				t.Errorf("job %s uses %s: pin it to a full commit SHA", name, s.Uses)
			}
			if s.Run != "" {
				deploys++
				if s.Env["ENVIRONMENT"] != name || !strings.Contains(s.Run, `"$ENVIRONMENT"`) {
					t.Errorf("job %s: deploy step %q with env %v; want the environment through env:", name, s.Run, s.Env)
				}
			}
		}
		if deploys != 1 {
			t.Errorf("job %s: %d deploy steps, want 1", name, deploys)
		}
	}
}
