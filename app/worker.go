package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
)

// Inbox is the worker's view of the durable inbox.
type Inbox interface {
	// NextWork returns up to limit due deliveries, at most one per
	// repository and none of busy repositories (by ID: a renamed one is
	// the same), and when the next of the other queue heads comes due
	// (zero: none).
	NextWork(ctx context.Context, now time.Time, busy map[pipeline.InHand]bool, limit int) ([]*pipeline.Delivery, time.Time, error)
	FinishDelivery(ctx context.Context, seq int64, note string) error
	// IgnoreDelivery records a handled delivery as ignored: handling found
	// nothing to act on (a push of a repository that is not enrolled).
	IgnoreDelivery(ctx context.Context, seq int64, note string) error
	FailDelivery(ctx context.Context, seq int64, cause string, next time.Time, dead bool) error
	// PostponeDelivery has a delivery wait until next without counting an
	// attempt: GitHub asked to wait (a rate limit), or its API has not
	// caught up yet.
	PostponeDelivery(ctx context.Context, seq int64, cause string, next time.Time) error
}

// Handler handles one delivery; it returns nil once its effects are committed.
type Handler interface {
	Handle(ctx context.Context, d *pipeline.Delivery) error
}

// HandlingObserver is told how each attempt went.
type HandlingObserver interface {
	DeliveryHandled(event, result string, took time.Duration)
}

// Worker drains the inbox: deliveries of one repository one at a time, in
// order of arrival; different repositories in parallel. A delivery is marked
// done only after its handler returned nil; a failure is retried with
// exponential backoff, and after MaxAttempts it is parked as dead.
type Worker struct {
	Inbox       Inbox
	Handler     Handler
	Observer    HandlingObserver
	Log         *slog.Logger
	Concurrency int
	MaxAttempts int
	// Timeout bounds one handling attempt.
	Timeout time.Duration
	// Backoff is the wait after a failed attempt (the first is attempt 1).
	Backoff func(attempt int) time.Duration
	Now     func() time.Time

	wake    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	alive   bool
	started chan struct{} // closed once Run has begun
	begun   sync.Once
	// hands is the context of the deliveries in hand: Run's ending does
	// not cancel it, Abort does.
	hands context.Context
	abort context.CancelFunc
}

func (w *Worker) init() {
	w.once.Do(func() {
		w.wake = make(chan struct{}, 1)
		w.started = make(chan struct{})
		if w.Backoff == nil {
			w.Backoff = DefaultBackoff
		}
		if w.Now == nil {
			w.Now = time.Now
		}
		if w.Concurrency <= 0 {
			w.Concurrency = 4
		}
		if w.MaxAttempts <= 0 {
			w.MaxAttempts = 10
		}
		if w.Timeout <= 0 {
			w.Timeout = 5 * time.Minute
		}
		w.hands, w.abort = context.WithCancel(context.Background())
	})
}

// Abort cancels the deliveries in hand (a shutdown out of time): their
// GitHub calls end, their outcome is not recorded, and they are handled
// again at the next start.
func (w *Worker) Abort() {
	w.init()
	w.abort()
}

// DefaultBackoff is the wait before attempt+1: between half and all of
// 5s, 10s, 20s, … (at most an hour), at random.
func DefaultBackoff(attempt int) time.Duration {
	d := 5 * time.Second << min(attempt-1, 10)
	d = min(d, time.Hour)
	return d/2 + rand.N(d/2+1)
}

// Notify wakes the worker: a delivery arrived.
func (w *Worker) Notify() {
	w.init()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Started is closed once Run has begun: Alive is true from then until Run
// ends.
func (w *Worker) Started() <-chan struct{} {
	w.init()
	return w.started
}

// Alive reports whether Run is running.
func (w *Worker) Alive() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.alive
}

// Run drains the inbox until ctx ends, then waits for the deliveries in
// hand to finish (they run on a context that ctx does not cancel; Abort
// does).
func (w *Worker) Run(ctx context.Context) {
	w.init()
	w.mu.Lock()
	w.alive = true
	w.mu.Unlock()
	w.begun.Do(func() { close(w.started) })
	defer func() {
		w.mu.Lock()
		w.alive = false
		w.mu.Unlock()
	}()

	busy := map[pipeline.InHand]bool{}
	done := make(chan pipeline.InHand, w.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		// One look at the inbox per turn: hand out what is due, and learn
		// when the next queue head comes due.
		var next time.Time
		if len(busy) < w.Concurrency {
			batch, n, err := w.Inbox.NextWork(ctx, w.Now(), busy, w.Concurrency-len(busy))
			if err != nil && ctx.Err() != nil {
				return
			}
			if err != nil {
				w.Log.Error("worker: read inbox", "error", err)
			}
			next = n
			for _, d := range batch {
				busy[d.InHand()] = true
				wg.Add(1)
				go func(d *pipeline.Delivery) {
					defer wg.Done()
					w.handle(w.hands, d)
					done <- d.InHand()
				}(d)
			}
		}
		var timer *time.Timer
		var due <-chan time.Time
		if len(busy) < w.Concurrency {
			// Sleep until the next head is due, or until woken (a delivery
			// arrived, a handling ended); also poll now and then, in case
			// another process wrote the inbox. A head waiting behind a busy
			// repository is looked at again when that handling ends.
			wait := 5 * time.Second
			if !next.IsZero() {
				wait = min(max(next.Sub(w.Now()), 0)+time.Millisecond, wait)
			}
			timer = time.NewTimer(wait)
			due = timer.C
		}
		select {
		case <-ctx.Done():
			for len(busy) > 0 {
				delete(busy, <-done)
			}
			return
		case repo := <-done:
			delete(busy, repo)
		case <-w.wake:
		case <-due:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// handle runs one attempt and records its outcome.
func (w *Worker) handle(ctx context.Context, d *pipeline.Delivery) {
	log := w.Log.With("delivery", d.ID, "event", d.Event, "action", d.Action, "installation", d.InstallationID, "repo", d.Repository)
	start := time.Now()
	hctx, cancel := context.WithTimeout(ctx, w.Timeout)
	err := w.safeHandle(hctx, d)
	cancel()
	took := time.Since(start)

	var ignored *pipeline.Ignored
	note, state := "", pipeline.DeliveryDone
	if errors.As(err, &ignored) {
		note, state, err = ignored.Reason, ignored.DeliveryState(), nil
	}
	if err == nil {
		finish := w.Inbox.FinishDelivery
		if state == pipeline.DeliveryIgnored {
			finish = w.Inbox.IgnoreDelivery
		}
		if !w.record(ctx, log, "mark delivery "+string(state), err, func() error { return finish(ctx, d.Seq, note) }) {
			return
		}
		log.Debug("delivery handled", "took", took, "state", state, "note", note)
		w.observe(d.Event, string(state), took)
		return
	}

	// Waiting for GitHub (its rate limit, or its API to catch up) is not
	// the delivery's fault: it is not an attempt, and never makes the
	// delivery dead. A secondary rate limit hit again and again is waited
	// out for longer each time, as GitHub asks.
	var wait time.Time
	waiting := false
	if rl, ok := githubapp.AsRateLimited(err, w.Now()); ok {
		wait, waiting = rl.Until, true
		if rl.Secondary {
			wait = later(wait, w.Now().Add(w.Backoff(d.Waits+1)))
		}
		if !errors.As(err, new(*githubapp.RateLimitedError)) {
			// go-github's own refusal: said in lastmile's words, last,
			// where `lastmile deliveries` shows the end of an error.
			err = fmt.Errorf("%w: %v", err, rl)
		}
	}
	if again := (*pipeline.LookAgain)(nil); errors.As(err, &again) {
		wait, waiting = again.At, true
	}
	if waiting {
		if !wait.After(w.Now()) {
			wait = w.Now().Add(w.Backoff(1))
		}
		if !w.record(ctx, log, "record a wait", err, func() error { return w.Inbox.PostponeDelivery(ctx, d.Seq, err.Error(), wait) }) {
			return
		}
		log.Warn("delivery waits for GitHub", "retry_at", wait.UTC().Format(time.RFC3339), "error", err)
		w.observe(d.Event, "retry", took)
		return
	}
	attempt := d.Attempts + 1
	next := w.Now().Add(w.Backoff(attempt))
	dead := attempt >= w.MaxAttempts || errors.Is(err, githubapp.ErrMalformed)
	if !w.record(ctx, log, "record failed attempt", err, func() error { return w.Inbox.FailDelivery(ctx, d.Seq, err.Error(), next, dead) }) {
		return
	}
	if dead {
		log.Error("delivery is dead: an operator can retry it with `lastmile deliveries retry` or give it up with `lastmile deliveries discard`", "attempts", attempt, "error", err)
		w.observe(d.Event, "dead", took)
		return
	}
	log.Warn("delivery failed; will retry", "attempt", attempt, "retry_at", next.UTC().Format(time.RFC3339), "error", err)
	w.observe(d.Event, "retry", took)
}

// record writes a handling's outcome, trying again (after 100 ms, doubling
// to 5 s) until it is written: the repository stays in hand meanwhile, so
// that its delivery is not handed out again at once and handled over and
// over while the database refuses writes. It gives up only when ctx ends
// (Abort): the delivery is then handled again at the next start.
func (w *Worker) record(ctx context.Context, log *slog.Logger, what string, cause error, write func() error) bool {
	wait := 100 * time.Millisecond
	for {
		ferr := write()
		if ferr == nil {
			return true
		}
		if ctx.Err() != nil {
			// Stopping (Abort): the write failed because the database
			// work was cancelled, not because something is wrong.
			log.Info("worker: stopped before it could "+what+"; the delivery is handled again at the next start", "cause", cause)
			return false
		}
		log.Error("worker: "+what+"; trying again", "error", ferr, "cause", cause, "retry_in", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (w *Worker) safeHandle(ctx context.Context, d *pipeline.Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panic: %v\n%s", p, debug.Stack())
		}
	}()
	return w.Handler.Handle(ctx, d)
}

func (w *Worker) observe(event, result string, took time.Duration) {
	if w.Observer != nil {
		w.Observer.DeliveryHandled(githubapp.KnownEvent(event), result, took)
	}
}
