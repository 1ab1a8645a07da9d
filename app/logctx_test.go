package app

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/pipeline"
)

// What the pipeline logs while it handles a delivery carries the
// delivery's ID, event and installation (issue: structured logs carrying
// delivery ID, event, installation and repository), not the repository
// alone.
func TestPipelineLogLinesNameTheirDelivery(t *testing.T) {
	var out lockedBuffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sb, err := NewSandbox(context.Background(), SandboxOptions{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	repo := sb.repo("shop", nil, simulator.WorkflowOptions{})
	push := sb.Sim.Push(repo, "main",
		simulator.CommitSpec{Message: "Add lastmile", Files: map[string]string{".github/lastmile.yml": "environments:\n  - name: test\n  - name: staging\n"}})
	waitFor(t, sb, "staging success", func(s *simulator.Simulator) bool {
		for _, d := range s.Deployments(repo) {
			if d.Environment == "staging" && d.SHA == push.After && d.State() == "success" {
				return true
			}
		}
		return false
	})
	settle(t, sb)

	want := map[string]string{"release recorded": "push", "promotion: deploy": "", "deployment created": "", "deployment status": "deployment_status"}
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var line struct {
			Msg          string `json:"msg"`
			Repo         string `json:"repo"`
			Delivery     string `json:"delivery"`
			Event        string `json:"event"`
			Installation int64  `json:"installation"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		event, ok := want[line.Msg]
		if !ok {
			continue
		}
		seen[line.Msg] = true
		if line.Delivery == "" || line.Installation == 0 || line.Repo != repo || line.Event == "" || (event != "" && line.Event != event) {
			t.Errorf("%q logged without its delivery, event (want %q), installation and repository:\n%s", line.Msg, event, sc.Text())
		}
	}
	for msg := range want {
		if !seen[msg] {
			t.Errorf("no %q line logged:\n%s", msg, out.String())
		}
	}
}

// A line that names an attribute of the delivery's itself (an
// installation's lines name the installation) does not have it twice.
func TestContextAttrsAddOnlyWhatALineLacks(t *testing.T) {
	var out lockedBuffer
	log := slog.New(contextAttrs{slog.NewJSONHandler(&out, nil)})
	ctx := withDelivery(context.Background(), &pipeline.Delivery{ID: "g-1", Event: "installation", Action: "suspend", InstallationID: 42})
	log.InfoContext(ctx, "installation suspended", "installation", int64(42), "action", "suspend")
	line := strings.TrimSpace(out.String())
	for key, want := range map[string]int{`"installation":`: 1, `"action":`: 1, `"delivery":"g-1"`: 1, `"event":"installation"`: 1} {
		if n := strings.Count(line, key); n != want {
			t.Errorf("%s %d times in %s, want %d", key, n, line, want)
		}
	}
}
