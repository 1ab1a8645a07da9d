package app

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
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
}
