package storage_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// A run's state delivered late (an earlier update, or an earlier attempt's
// after a re-run began, or of the same second as the end: updated_at has
// whole seconds) changes nothing and is reported as not current; a
// completed one without updated_at (GitHub always sends it) still counts.
func TestRecordWorkflowRunKeepsTheNewestState(t *testing.T) {
	ctx := context.Background()
	db, err := storage.Open(ctx, filepath.Join(t.TempDir(), "lastmile.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	run := func(status string, attempt int, updated time.Duration) pipeline.WorkflowRun {
		r := pipeline.WorkflowRun{Repo: pipeline.Repo{ID: 42, Owner: "acme", Name: "shop"}, RunID: 11, Event: "deployment",
			HeadSHA: "c1", Status: status, Attempt: attempt, CreatedAt: t0}
		if updated >= 0 {
			r.UpdatedAt = t0.Add(updated)
		}
		return r
	}
	for i, step := range []struct {
		run     pipeline.WorkflowRun
		current bool
	}{
		{run("in_progress", 1, time.Second), true},
		{run("completed", 1, 3*time.Second), true},
		{run("in_progress", 1, 2*time.Second), false}, // delivered late
		{run("completed", 1, 3*time.Second), true},    // redelivered: the same state
		{run("in_progress", 1, 3*time.Second), false}, // of the same second, delivered after the end
		{run("in_progress", 2, 5*time.Second), true},  // a re-run
		{run("completed", 1, 3*time.Second), false},   // the first attempt's end, once more
		{run("completed", 2, -1), true},               // no updated_at
	} {
		got, err := db.RecordWorkflowRun(ctx, step.run)
		if err != nil || got != step.current {
			t.Errorf("step %d (%s, attempt %d): current %v, %v; want %v", i, step.run.Status, step.run.Attempt, got, err, step.current)
		}
	}
}
