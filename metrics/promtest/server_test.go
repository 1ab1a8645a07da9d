package promtest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// The runner starts a real Prometheus that scrapes a target and evaluates
// lastmile's rules, answers queries, and leaves nothing behind when stopped.
func TestStartT(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE promtest_answer gauge\npromtest_answer 42\n")
	}))
	defer target.Close()
	addr := strings.TrimPrefix(target.URL, "http://")

	var s *Server
	t.Run("running", func(t *testing.T) {
		s = StartT(t, addr)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.WaitForTargetsUp(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := s.WaitForSamples(ctx, `promtest_answer{job="lastmile"}`, func(v []Sample) bool { return len(v) == 1 })
		if err != nil || got[0].Value != 42 {
			t.Fatalf("promtest_answer = %v, %v", got, err)
		}
		if _, err := s.Query(ctx, `sum(`, time.Time{}); err == nil {
			t.Error("a malformed query gave no error")
		}
		groups, err := s.Rules(ctx)
		if err != nil || len(groups) == 0 {
			t.Fatalf("rules: %v, %v", groups, err)
		}
		names, err := s.LabelValues(ctx, "__name__", `{job="lastmile"}`, time.Now().Add(-time.Minute), time.Now())
		if err != nil || !strings.Contains(strings.Join(names, " "), "promtest_answer") {
			t.Errorf("label values: %q, %v", names, err)
		}
	})
	// StartT's cleanup ran at the end of the subtest.
	select {
	case <-s.exited:
	default:
		t.Fatal("prometheus still running after the test ended")
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Errorf("data directory %s left behind: %v", s.dir, err)
	}
}

func TestBinaryFromEnvironment(t *testing.T) {
	t.Setenv("PROMTEST_TOOL", "/nonexistent/promtool")
	if _, err := Binary("promtool", "PROMTEST_TOOL"); err == nil || !strings.Contains(err.Error(), ".ci/run") {
		t.Errorf("Binary with a missing path: %v, want an error that says .ci/run installs it", err)
	}
	t.Setenv("PROMTEST_TOOL", os.Args[0])
	if p, err := Binary("promtool", "PROMTEST_TOOL"); err != nil || p != os.Args[0] {
		t.Errorf("Binary = %q, %v, want %q", p, err, os.Args[0])
	}
}
