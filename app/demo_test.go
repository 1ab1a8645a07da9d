package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut strings.Builder
	demoWrapGitHub = oasvalidate.Wrap(t)
	t.Cleanup(func() { demoWrapGitHub = nil })
	start := time.Now()
	if code := Main(ctx, []string{"demo", "--dir", dir}, func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d\n%s%s", code, out.String(), errOut.String())
	}
	t.Logf("the demo took %s", time.Since(start).Round(time.Millisecond))
	text := out.String()
	for _, want := range []string{
		"is completed",
		`approved by alice ("staging looks right")`,
		`approved by bob ("ship it")`,
		`lastmile_deployments_total{environment="production",repository="acme/shop",state="success"} 1`,
		"Lead time to production",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, text)
		}
	}
	for _, env := range []string{"test", "staging", "production"} {
		if !regexp.MustCompile(`(?m)^  ` + env + ` +deployment \d+: success.*deploy log kept`).MatchString(text) {
			t.Errorf("no successful %s deployment with its log in:\n%s", env, text)
		}
	}
	if !regexp.MustCompile(`Fix rounding in totals +20m`).MatchString(text) {
		t.Errorf("lead time of the last commit is not about 20 minutes:\n%s", text)
	}
	// The database stays, and the deploy logs show the Action ran the command.
	sha := regexp.MustCompile(`head ([0-9a-f]{7})`).FindStringSubmatch(text)
	if sha == nil {
		t.Fatalf("no head commit printed:\n%s", text)
	}
	code, logs, _ := run(t, filepath.Join(dir, "lastmile.db"), "audit", "--logs", "acme/shop", sha[1])
	if code != 0 || !strings.Contains(logs, "deploying "+sha[1]) || !strings.Contains(logs, " to production") {
		t.Errorf("audit --logs of the demo's release: exit %d\n%s", code, logs)
	}
	// Every command it prints next runs as printed, pasted whole into a
	// shell: the read commands read the release, and demo --keep-running
	// takes its flags (--help added, so that it does not run: a stray word
	// would end the flags, and lastmile demo refuses arguments).
	prefix := shellArgs(t, self(func(string) string { return "" }))
	ran := map[string]bool{}
	for _, line := range demoCommandLines(t, text) {
		args := shellArgs(t, line)
		if len(args) <= len(prefix) || strings.Join(args[:len(prefix)], "\x00") != strings.Join(prefix, "\x00") {
			t.Errorf("printed command %q does not run lastmile as %q", line, prefix)
			continue
		}
		args = args[len(prefix):]
		ran[args[0]] = true
		want := ""
		switch args[0] {
		case "audit":
			want = "Fix rounding in totals"
		case "history":
			want = "production:success"
		case "status":
			want = "#1 "
		case "demo":
			args = append(args, "--help")
			want = "Usage: lastmile demo"
		}
		var out, errOut strings.Builder
		if code := Main(ctx, args, func(string) string { return "" }, &out, &errOut); code != 0 || !strings.Contains(out.String(), want) {
			t.Errorf("printed command %q: lastmile %q exited %d, printing %q (want it to contain %q)\n%s", line, args, code, out.String(), want, errOut.String())
		}
	}
	for _, cmd := range []string{"audit", "history", "status", "demo"} {
		if !ran[cmd] {
			t.Errorf("the demo printed no lastmile %s command to run next:\n%s", cmd, text)
		}
	}
}

// TestDemoNextStepsPasteWhole checks the demo's closing commands with
// words that need quoting (the binary's and the database's folders with a
// space and a quote), with and without --keep-running: each command line,
// parsed as a shell would, has exactly the arguments meant, and no line of
// description text reaches one.
func TestDemoNextStepsPasteWhole(t *testing.T) {
	binary := "/tmp/my tools/lastmile"
	database := "/tmp/Dana's demo/lastmile.db"
	sha := "2e4c0b4d6f0a6f5e0b9e2a3c4d5e6f708192a3b4"
	lm := []string{binary}
	for _, keep := range []bool{false, true} {
		var b strings.Builder
		printDemoNextSteps(&b, demoNextSteps{self: commandName(binary, ""), database: database, repo: "acme/shop", sha: sha,
			keep: keep, url: "http://127.0.0.1:40123", token: "demo-api-token-ABC"})
		want := [][]string{
			append(lm, "audit", "--database", database, "acme/shop", sha[:7]),
			append(lm, "history", "--database", database),
			append(lm, "status", "--database", database),
		}
		if keep {
			want = append(want,
				[]string{"curl", "http://127.0.0.1:40123/metrics"},
				[]string{"curl", "-H", "Authorization: Bearer demo-api-token-ABC", "http://127.0.0.1:40123/api/v1/releases/acme/shop/" + sha})
		} else {
			want = append(want, append(lm, "demo", "--keep-running"))
		}
		var got [][]string
		for _, line := range demoCommandLines(t, b.String()) {
			got = append(got, shellArgs(t, line))
		}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Errorf("keep-running %v: the printed commands parse as\n%q\nwant\n%q\nprinted:\n%s", keep, got, want, b.String())
		}
	}
}

// TestREADMEQuotesTheDemosNextSteps keeps the README's quote of the
// demo's closing lines true.
func TestREADMEQuotesTheDemosNextSteps(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	// As go run ./cmd/lastmile demo prints them, the README's own command.
	printDemoNextSteps(&b, demoNextSteps{self: commandName("/tmp/go-build1715990240/b001/exe/lastmile", ""), database: "/tmp/lastmile-demo-2817465930/lastmile.db",
		repo: "acme/shop", sha: "2e4c0b4d6f0a6f5e0b9e2a3c4d5e6f708192a3b4"})
	if quote := "```\n" + strings.TrimPrefix(b.String(), "\n") + "```\n"; !strings.Contains(string(readme), quote) {
		t.Errorf("the README does not quote the demo's closing lines as it prints them:\n%s", quote)
	}
}

// demoCommandLines returns the command lines of the demo's closing part
// (from "Where to look:"): indented by four spaces, each under a line
// indented by two that says what it shows and ends with a colon. Any other
// line there fails the test.
func demoCommandLines(t *testing.T, text string) []string {
	t.Helper()
	i := strings.Index(text, "\nWhere to look:\n")
	if i < 0 {
		t.Fatalf("no \"Where to look:\" in the demo's output:\n%s", text)
	}
	var cmds []string
	described := false
	for _, line := range strings.Split(strings.TrimSuffix(text[i+1:], "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "    "):
			if !described {
				t.Errorf("command line %q has no description line above it", line)
			}
			cmds = append(cmds, strings.TrimPrefix(line, "    "))
			described = false
		case strings.HasPrefix(line, "  ") && strings.HasSuffix(line, ":"):
			described = true
		case line == "" || line == "Where to look:" || line == "lastmile keeps running (Ctrl-C stops it):":
		default:
			t.Errorf("line %q of the demo's closing part is neither a command nor the description of one", line)
		}
	}
	if len(cmds) == 0 {
		t.Fatalf("no command lines after \"Where to look:\":\n%s", text)
	}
	return cmds
}

// shellArgs parses line as a POSIX shell would: one simple command, no
// comment (zsh takes # as a word unless interactive_comments is set), every
// word literal — plain, single-quoted or double-quoted text, no expansion —
// and returns its words.
func shellArgs(t *testing.T, line string) []string {
	t.Helper()
	f, err := syntax.NewParser(syntax.KeepComments(true), syntax.Variant(syntax.LangPOSIX)).Parse(strings.NewReader(line), "")
	if err != nil {
		t.Errorf("%q is not a shell command: %v", line, err)
		return nil
	}
	call, ok := (*syntax.CallExpr)(nil), len(f.Stmts) == 1
	if ok {
		call, ok = f.Stmts[0].Cmd.(*syntax.CallExpr)
	}
	if !ok || len(f.Stmts[0].Redirs) > 0 || f.Stmts[0].Background || len(f.Stmts[0].Comments) > 0 || len(f.Last) > 0 || len(call.Assigns) > 0 {
		t.Errorf("%q is not one simple command without a comment", line)
		return nil
	}
	var args []string
	for _, w := range call.Args {
		for _, part := range w.Parts {
			switch p := part.(type) {
			case *syntax.Lit:
				ok = ok && !strings.ContainsAny(p.Value, "*?[{~") // no glob, brace or tilde expansion
			case *syntax.SglQuoted:
				ok = ok && !p.Dollar
			case *syntax.DblQuoted:
				for _, q := range p.Parts {
					_, lit := q.(*syntax.Lit)
					ok = ok && lit
				}
			default:
				ok = false
			}
		}
		fields, err := expand.Fields(nil, w)
		if !ok || err != nil || len(fields) != 1 {
			t.Errorf("%q: the word %q is not plain text", line, line[w.Pos().Offset():w.End().Offset()])
			return nil
		}
		args = append(args, fields[0])
	}
	return args
}

// TestDemoSaysWhyTheReleaseStopped runs the demo where its deploy step
// cannot work: without bash it refuses to start, saying so; with a bash
// that fails every command, the release stops in test and the demo says
// why, with the record's commands, instead of waiting out its minute.
func TestDemoSaysWhyTheReleaseStopped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	dir := filepath.Join(t.TempDir(), "demo")
	var out, errOut strings.Builder
	if code := Main(ctx, []string{"demo", "--dir", dir}, func(string) string { return "" }, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "runs its command with bash") {
		t.Errorf("demo without bash exited %d, want an error that says bash is needed:\n%s%s", code, out.String(), errOut.String())
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("demo without bash made its folder before refusing")
	}

	failing := filepath.Join(empty, "bash")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'no deploy today' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errOut.Reset()
	code := Main(ctx, []string{"demo", "--dir", dir}, func(string) string { return "" }, &out, &errOut)
	if code == 0 {
		t.Fatalf("demo with a failing deploy exited 0:\n%s", out.String())
	}
	if msg := errOut.String(); !strings.Contains(msg, "did not reach production: deployment to test ended in failure") || strings.Contains(msg, "within a minute") {
		t.Errorf("demo with a failing deploy said\n%s\nwant the release's stop reason", msg)
	}
	text := out.String()
	if !strings.Contains(text, "is stopped") || !strings.Contains(text, " audit --database ") || strings.Contains(text, "--keep-running") {
		t.Errorf("demo with a failing deploy printed no stopped release and no audit command (or something to browse):\n%s", text)
	}
}

// watchedOutput is a demo's stdout that tells when a text has been printed.
type watchedOutput struct {
	mu   sync.Mutex
	b    strings.Builder
	want string
	seen chan struct{}
}

func (w *watchedOutput) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.b.Write(p)
	if w.seen != nil && strings.Contains(w.b.String(), w.want) {
		close(w.seen)
		w.seen = nil
	}
	return n, err
}

func (w *watchedOutput) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// demo --keep-running serves /metrics at the address it prints until
// Ctrl-C, then says it stops, and stops: nothing answers there after.
func TestDemoKeepRunningStopsOnCtrlC(t *testing.T) {
	deadline, cancelDeadline := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelDeadline()
	ctx, interrupt := context.WithCancel(deadline)
	out := &watchedOutput{want: "lastmile keeps running (Ctrl-C stops it):", seen: make(chan struct{})}
	seen := out.seen
	var errOut strings.Builder
	code := make(chan int, 1)
	go func() {
		code <- Main(ctx, []string{"demo", "--keep-running", "--dir", filepath.Join(t.TempDir(), "demo")}, func(string) string { return "" }, out, &errOut)
	}()
	select {
	case <-seen:
	case c := <-code:
		t.Fatalf("demo --keep-running exited %d before it said it keeps running:\n%s%s", c, out.String(), errOut.String())
	case <-deadline.Done():
		t.Fatalf("demo --keep-running did not say it keeps running:\n%s", out.String())
	}
	m := regexp.MustCompile(`curl (http://127\.0\.0\.1:\d+/metrics)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no metrics address printed:\n%s", out.String())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "lastmile_deployments_total") {
		t.Fatalf("GET %s while it keeps running: %d\n%.300s", m[1], resp.StatusCode, body)
	}
	interrupt()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("demo --keep-running exited %d after Ctrl-C, want 0:\n%s", c, errOut.String())
		}
	case <-deadline.Done():
		t.Fatal("demo --keep-running did not stop after Ctrl-C")
	}
	if !strings.Contains(out.String(), "\nstopping lastmile and the simulated GitHub; the database stays in ") {
		t.Errorf("nothing said on Ctrl-C:\n%s", out.String())
	}
	if resp, err := http.Get(m[1]); err == nil {
		resp.Body.Close()
		t.Errorf("GET %s after the demo stopped: %d, want no answer", m[1], resp.StatusCode)
	}
}

// Ctrl-C while the demo waits for its release says the demo was
// interrupted and where its database stays, not that the release took
// longer than the minute it allows.
func TestDemoInterruptedWhileItWaits(t *testing.T) {
	deadline, cancelDeadline := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelDeadline()
	ctx, interrupt := context.WithCancel(deadline)
	bin := t.TempDir()
	// The deploy command never ends: the release waits in test.
	if err := os.WriteFile(filepath.Join(bin, "bash"), []byte("#!/bin/sh\nexec sleep 120\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out := &watchedOutput{want: "pushed 3 commits to main", seen: make(chan struct{})}
	seen := out.seen
	var errOut strings.Builder
	code := make(chan int, 1)
	go func() {
		code <- Main(ctx, []string{"demo", "--dir", filepath.Join(t.TempDir(), "demo")}, func(string) string { return "" }, out, &errOut)
	}()
	select {
	case <-seen:
	case c := <-code:
		t.Fatalf("demo exited %d before it pushed:\n%s%s", c, out.String(), errOut.String())
	case <-deadline.Done():
		t.Fatalf("demo did not push:\n%s", out.String())
	}
	interrupt()
	select {
	case c := <-code:
		if msg := errOut.String(); c == 0 || !strings.Contains(msg, "interrupted before the release finished; the database stays in ") || strings.Contains(msg, "within a minute") {
			t.Errorf("demo interrupted while it waited: exit %d, said\n%s\nwant that it was interrupted and where the database is", c, msg)
		}
	case <-deadline.Done():
		t.Fatal("demo did not stop after Ctrl-C")
	}
}

// --dir given empty (--dir "$DIR", DIR unset) is refused, as --database
// is, rather than taken for a new temporary folder: a usage error, before
// anything is made.
func TestDemoRefusesAnEmptyDir(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("PATH", t.TempDir()) // no bash: without the check, the demo stops soon after
	for _, args := range [][]string{{"--dir", ""}, {"--dir= "}, {"--verbose", "--dir="}} {
		var out, errOut strings.Builder
		code := Main(context.Background(), append([]string{"demo"}, args...), func(string) string { return "" }, &out, &errOut)
		if want := "lastmile demo: --dir: must not be empty (leave the flag out for a new temporary folder)\n"; code != 2 || out.Len() != 0 || errOut.String() != want {
			t.Errorf("demo %q: exit %d, stdout %q, stderr %q; want 2 and %q", args, code, out.String(), errOut.String(), want)
		}
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("the refused demos left %v in TMPDIR", entries)
	}
}
