//go:build linux

package action_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// processGone waits until the process whose PID the command wrote to file
// has exited, failing the test at the context's deadline.
func (w *world) processGone(file string) {
	w.t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		w.t.Fatal(err)
	}
	proc := "/proc/" + strings.TrimSpace(string(b))
	for {
		st, err := os.ReadFile(proc + "/stat")
		// Gone, or a zombie waiting for its parent (init) to reap it.
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		select {
		case <-w.ctx.Done():
			w.t.Fatalf("process %s still runs: %v", strings.TrimSpace(string(b)), w.ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// The README's advice — trap TERM in the deploy script to clean up — with a
// script that bounds a step with timeout(1), which puts itself and the
// step in a process group of their own: when the job is cancelled the
// step gets SIGTERM too (not only the script's group), ends, and the
// script's trap runs, where the step ran on and the trap never ran (the
// script, waiting for its foreground child, was killed 5 s later).
func TestBinaryCancelReachesAStepUnderTimeout(t *testing.T) {
	binary(t)
	w := newWorld(t)
	id := w.createDeployment()
	dir := t.TempDir()
	pidFile, cleanFile := filepath.Join(dir, "step.pid"), filepath.Join(dir, "cleaned")
	killPIDFileOnCleanup(t, pidFile)
	script := filepath.Join(dir, "deploy.sh")
	if err := os.WriteFile(script, []byte(`#!/bin/bash
trap 'echo cleaned > "$CLEAN_FILE"; exit 1' TERM
echo "deploying to $1"
timeout 300 bash -c 'echo $$ > "$PID_FILE"; echo "command: sleeping"; exec sleep 300'
echo "deployed"
`), 0o755); err != nil {
		t.Fatal(err)
	}
	s := newStep(t, w.directJob(id), map[string]string{
		"INPUT_COMMAND":              script,
		"INPUT_PASS-ENVIRONMENT-ARG": "true",
		"PID_FILE":                   pidFile,
		"CLEAN_FILE":                 cleanFile,
	})
	p := startBinary(t, s, nil)
	if err := p.waitLine(w.ctx, "command: sleeping"); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(os.Interrupt)
	if code := w.exitCode(p); code != 1 {
		t.Errorf("exit code %d, want 1:\n%s", code, p.output())
	}
	if b, err := os.ReadFile(cleanFile); err != nil || strings.TrimSpace(string(b)) != "cleaned" {
		t.Errorf("the script's TERM trap did not run (%v):\n%s", err, p.output())
	}
	w.processGone(pidFile)
	wantStates(t, w.deployment(id), "in_progress", "error")
}
