package pipeline_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// recordHook is the ledger, but for a function run once just before the
// next protection decision is recorded: what another handler, or another
// lastmile process, does in between.
type recordHook struct {
	*storage.DB
	before func(d *pipeline.ProtectionDecision)
}

func (s *recordHook) RecordProtectionDecision(ctx context.Context, d *pipeline.ProtectionDecision) error {
	if before := s.before; before != nil {
		s.before = nil
		before(d)
	}
	return s.DB.RecordProtectionDecision(ctx, d)
}

// A protection-rule request waits for c1's deployment to staging; that
// deployment's success reaches the worker as the sweep, the hold over,
// judges the request again. Whichever records its decision first, GitHub
// is sent that decision alone — the one the record keeps — never an
// approval besides a recorded rejection, nor the other way round.
func TestProtectionRuleAnsweredOnceWhenTheSweepAndTheWorkerRace(t *testing.T) {
	for _, tc := range []struct {
		name string
		// race runs the sweep and the worker, and whatever happens
		// between a decision and its record.
		race func(h *harness, s *recordHook)
		want string // the state recorded and posted
	}{
		{
			// The sweep decides (rejected: the hold is over and staging
			// has not succeeded); before it records, the worker handles
			// staging's success, approves, records and posts.
			name: "the worker answers between the sweep's decision and its record",
			race: func(h *harness, s *recordHook) {
				s.before = func(*pipeline.ProtectionDecision) {
					h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
				}
				if _, err := h.engine.AnswerLongWaitingProtectionRules(context.Background()); err != nil {
					h.t.Fatal(err)
				}
			},
			want: pipeline.ProtectionApproved,
		},
		{
			// The worker decides (approved: staging succeeded); before it
			// records, the sweep of another lastmile process, which
			// judged the request before the success was stored, records
			// its rejection.
			name: "another process records between the worker's decision and its record",
			race: func(h *harness, s *recordHook) {
				s.before = func(d *pipeline.ProtectionDecision) {
					other := *d
					other.State, other.Comment = pipeline.ProtectionRejected, "lastmile rejects: not proven (the other process's sweep)."
					if err := h.db.RecordProtectionDecision(context.Background(), &other); err != nil {
						h.t.Fatal(err)
					}
				}
				h.status(c1, "staging", pipeline.DeploymentSuccess, 11, true)
			},
			want: pipeline.ProtectionRejected,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t, c0, c1)
			started := time.Now()
			var mu sync.Mutex
			now := started
			clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
			h.engine.Now, h.db.Now, h.gh.now = clock, clock, clock
			hook := &recordHook{DB: h.db}
			h.engine.Store = hook
			h.release(c0, c1, 10, "test")
			h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
			if dec := h.judge("rule-1", "production", c1, 40); dec.State != pipeline.ProtectionWaiting {
				t.Fatalf("production job of c1 while staging deploys: %s (%s); want waiting", dec.State, dec.Comment)
			}
			mu.Lock()
			now = started.Add(pipeline.HoldRunning + time.Minute)
			mu.Unlock()

			tc.race(h, hook)

			dec, err := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1"})
			if err != nil {
				t.Fatal(err)
			}
			h.gh.mu.Lock()
			answers := slices.Clone(h.gh.answers)
			h.gh.mu.Unlock()
			if want := []string{"40 production " + dec.State}; dec.State != tc.want || !dec.Posted || !slices.Equal(answers, want) {
				t.Errorf("recorded %s (posted %v), GitHub answered %q; want %s recorded and posted, and %q alone answered",
					dec.State, dec.Posted, answers, tc.want, want)
			}
		})
	}
}

// A protection-rule request judged again while it still waits — c1's
// deployment to staging reported in progress again, hours later — is
// looked at by the sweep again only HoldRunning after that judgement, not
// at every sweep from HoldRunning after the first; then, staging's
// deployment silent since, it is rejected.
func TestProtectionRuleStillWaitingIsJudgedAgainAfterTheHoldOnly(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, c0, c1)
	started := time.Now()
	var mu sync.Mutex
	now := started
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	h.engine.Now, h.db.Now, h.gh.now = clock, clock, clock
	h.release(c0, c1, 10, "test")
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true)
	if dec := h.judge("rule-1", "production", c1, 40); dec.State != pipeline.ProtectionWaiting {
		t.Fatalf("production job of c1 while staging deploys: %s (%s); want waiting", dec.State, dec.Comment)
	}
	again := started.Add(pipeline.HoldRunning - time.Hour)
	set(again)
	h.status(c1, "staging", pipeline.DeploymentInProgress, 11, true) // still deploying; the request is judged again
	for _, at := range []time.Duration{time.Minute, 2 * time.Minute, 22 * time.Hour} {
		set(started.Add(pipeline.HoldRunning + at))
		if n, err := h.engine.AnswerLongWaitingProtectionRules(ctx); err != nil || n != 0 {
			t.Errorf("%v after the first judgement, %v after the last: %d judged again, %v; want none",
				pipeline.HoldRunning+at, pipeline.HoldRunning+at-(pipeline.HoldRunning-time.Hour), n, err)
		}
	}
	set(again.Add(pipeline.HoldRunning + time.Minute))
	if n, err := h.engine.AnswerLongWaitingProtectionRules(ctx); err != nil || n != 1 {
		t.Errorf("after the hold of the last judgement: %d judged again, %v; want 1", n, err)
	}
	dec, err := h.db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{Repo: shop, DeliveryID: "rule-1"})
	if err != nil || dec.State != pipeline.ProtectionRejected || !dec.Posted {
		t.Errorf("the request after the hold ended: %+v, %v; want rejected, posted", dec, err)
	}
}
