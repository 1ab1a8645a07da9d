package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v62/github"
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
	// attempt: GitHub asked to wait (a rate limit), its API has not caught
	// up yet, or it does not answer.
	PostponeDelivery(ctx context.Context, seq int64, cause string, next time.Time) error
}

// Installations is what the worker reads of the App's installations.
type Installations interface {
	// Installation is what lastmile recorded of an installation;
	// pipeline.ErrNotFound if nothing.
	Installation(ctx context.Context, id int64) (pipeline.InstallationState, error)
	// Detached reports whether a repository was removed from the
	// installation it was reached through.
	Detached(ctx context.Context, repoID int64) (bool, error)
}

// SuspendedRecheck is how long a delivery of a suspended installation
// waits before lastmile asks GitHub again. The unsuspension's webhook makes
// it due at once (Store.SetInstallation): this is for an unsuspension whose
// webhook lastmile never gets.
const SuspendedRecheck = time.Hour

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
	Inbox   Inbox
	Handler Handler
	// Installations, if set, tells a delivery of an uninstalled
	// installation, which is ignored rather than retried.
	Installations Installations
	Observer      HandlingObserver
	Log           *slog.Logger
	Concurrency   int
	MaxAttempts   int
	// Timeout bounds one handling attempt.
	Timeout time.Duration
	// Backoff is the wait after a failed attempt (the first is attempt 1).
	Backoff func(attempt int) time.Duration
	// UnreachableFor is how long after its receipt a delivery waits for
	// GitHub, its attempts not counted, when GitHub does not answer
	// (zero: UnreachableWait).
	UnreachableFor time.Duration
	Now            func() time.Time

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

// UnreachableWait is how long after its receipt a delivery waits for GitHub
// when GitHub does not answer (no answer, or a 5xx), its attempts not
// counted: longer than GitHub's outages mostly last.
const UnreachableWait = 6 * time.Hour

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
	attrs := []any{"delivery", d.ID, "event", d.Event}
	if d.Action != "" { // a push has none
		attrs = append(attrs, "action", d.Action)
	}
	log := w.Log.With(append(attrs, "installation", d.InstallationID, "repo", d.Repository)...)
	start := time.Now()
	var err error
	if d.BodyDamage != nil { // nothing to handle: dead at once
		err = fmt.Errorf("%w: its stored body is damaged: %v", githubapp.ErrMalformed, d.BodyDamage)
	} else {
		hctx, cancel := context.WithTimeout(withDelivery(ctx, d), w.Timeout)
		err = w.safeHandle(hctx, log, d)
		cancel()
	}
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
	err = githubapp.Tidy(err) // as logged and as `lastmile deliveries` shows it

	// The App was uninstalled: GitHub refuses the installation's token, and
	// always will. That is no fault to alert anyone of: the delivery is
	// ignored, saying why, rather than retried until dead.
	note, ok := w.uninstalled(ctx, err)
	if !ok && accessRefused(err, w.Now()) {
		note, ok = w.removed(ctx, d)
	}
	if ok {
		if !w.record(ctx, log, "mark delivery ignored", err, func() error { return w.Inbox.IgnoreDelivery(ctx, d.Seq, note) }) {
			return
		}
		log.Warn("delivery ignored: lastmile no longer has access to its repository", "note", note, "error", err)
		w.observe(d.Event, string(pipeline.DeliveryIgnored), took)
		return
	}

	// Waiting for GitHub (its rate limit, or its API to catch up) is not
	// the delivery's fault: it is not an attempt, and never makes the
	// delivery dead. A secondary rate limit hit again and again is waited
	// out for longer each time, as GitHub asks. Nor is waiting for an
	// installation to be unsuspended: its unsuspension makes the delivery
	// due at once.
	var wait time.Time
	waiting, why := false, "delivery waits for GitHub"
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
	if !waiting && githubapp.Unreachable(err) && w.Now().Sub(d.ReceivedAt) < cmp.Or(w.UnreachableFor, UnreachableWait) {
		// GitHub not answering (an outage, the network) is no more the
		// delivery's fault: waited out, longer each time, for a while.
		// Past it, one GitHub keeps failing on (a 5xx for this call
		// alone) counts attempts again, so that it does not hold its
		// repository's queue for good.
		wait, waiting, why = w.Now().Add(w.Backoff(d.Waits+1)), true, "delivery waits for GitHub to answer"
	}
	if githubapp.InstallationSuspended(err) {
		wait, waiting, why = w.Now().Add(SuspendedRecheck), true, "delivery waits until its installation is unsuspended"
		// Said first, GitHub's refusal last: `lastmile deliveries` keeps
		// both ends of a long error.
		err = fmt.Errorf("%s: %w", w.suspension(ctx, d.InstallationID), err)
	}
	if waiting {
		if !wait.After(w.Now()) {
			wait = w.Now().Add(w.Backoff(1))
		}
		if !w.record(ctx, log, "record a wait", err, func() error { return w.Inbox.PostponeDelivery(ctx, d.Seq, err.Error(), wait) }) {
			return
		}
		log.Warn(why, "retry_at", wait.UTC().Format(time.RFC3339), "error", err)
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

// uninstalled returns the note of a delivery whose installation's token
// GitHub refused as unknown (404) when lastmile recorded the installation
// as uninstalled. GitHub's 404 alone does not tell an uninstalled App from
// lastmile running with another App's ID and key, or against another
// GitHub: ignoring deliveries then would lose them, where retrying makes
// them dead, for an operator to retry once the setting is fixed. And an
// uninstallation's webhook is sent to every App (and asked for again when
// missed), so a delivery refused before it was handled is ignored at its
// next attempt.
func (w *Worker) uninstalled(ctx context.Context, err error) (note string, ok bool) {
	id, gone := githubapp.InstallationGone(err)
	if !gone || w.Installations == nil {
		return "", false
	}
	st, lerr := w.Installations.Installation(ctx, id)
	if lerr != nil || st.State != pipeline.InstallationUninstalled {
		return "", false
	}
	return fmt.Sprintf("the lastmile App was uninstalled from installation %d%s%s at %s: GitHub no longer gives lastmile access to it",
		id, forAccount(st.Account), byLogin(st.By), st.Since.UTC().Format(time.RFC3339)), true
}

// accessRefused reports whether err is GitHub refusing lastmile the
// repository: 404, or 401 or 403 other than a rate limit — not a 5xx, a
// network error or a rate limit, which a repository lastmile still reaches
// gets too, and which pass.
func accessRefused(err error, now time.Time) bool {
	if _, limited := githubapp.AsRateLimited(err, now); limited {
		return false
	}
	if errors.Is(err, pipeline.ErrNotFound) {
		return true
	}
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		switch er.Response.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			return true
		}
	}
	var refused *pipeline.RefusedError
	return errors.As(err, &refused) && (refused.Status == http.StatusForbidden || refused.Status == http.StatusNotFound)
}

// removed returns the note of a failed delivery of a repository that was
// removed from lastmile's installation since (its calls GitHub refuses
// now, and the repository left lastmile).
func (w *Worker) removed(ctx context.Context, d *pipeline.Delivery) (string, bool) {
	if w.Installations == nil || d.RepositoryID == 0 || d.InstallationID == 0 {
		return "", false
	}
	gone, err := w.Installations.Detached(ctx, d.RepositoryID)
	if err != nil || !gone {
		return "", false
	}
	return fmt.Sprintf("%s was removed from the lastmile App's installation %d: GitHub no longer gives lastmile access to it",
		d.Repository, d.InstallationID), true
}

// suspension says that an installation is suspended, and since when and
// by whom when lastmile heard of it.
func (w *Worker) suspension(ctx context.Context, id int64) string {
	what := fmt.Sprintf("installation %d is suspended", id)
	if w.Installations != nil {
		if st, err := w.Installations.Installation(ctx, id); err == nil && st.State == pipeline.InstallationSuspended {
			what = fmt.Sprintf("installation %d%s was suspended%s at %s", id, forAccount(st.Account), byLogin(st.By),
				st.Since.UTC().Format(time.RFC3339))
		}
	}
	return what + ": waiting until it is unsuspended (not an attempt)"
}

func forAccount(account string) string {
	if account == "" {
		return ""
	}
	return " (" + account + ")"
}

func byLogin(login string) string {
	if login == "" {
		return ""
	}
	return " by " + login
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

// safeHandle runs the handler, turning its panic into an error that says
// the panic's value and where it happened, short enough that `lastmile
// deliveries` shows both; the goroutine's stack goes to log, at ERROR,
// once per attempt.
func (w *Worker) safeHandle(ctx context.Context, log *slog.Logger, d *pipeline.Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(p, panicked())
			log.Error("worker: handler panic", "error", err, "stack", string(debug.Stack()))
		}
	}()
	return w.Handler.Handle(ctx, d)
}

// panicError is a handler's panic as a delivery's error: its value (at most
// 200 characters) and, when known, where it panicked.
func panicError(p any, at string) error {
	v := []rune(fmt.Sprint(p))
	if len(v) > 200 {
		v = append(v[:199], '…')
	}
	if at == "" {
		return fmt.Errorf("handler panic: %s", string(v))
	}
	return fmt.Errorf("handler panic: %s (at %s)", string(v), at)
}

// panicked returns where the panic being recovered happened, as a file's
// directory and name and a line (app/worker.go:123): the first of
// lastmile's own frames after runtime.gopanic — the line of lastmile's
// that panicked, or that called the library that did —, else the first
// frame there not in the runtime (which raises the panics of a nil map, a
// nil pointer or an index out of range on the code's behalf). Called from
// the deferred function that recovers; "" when not found.
func panicked() string {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	inPanic := false
	var first string
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			inPanic = true
		case inPanic && !inRuntime(f.Function) && f.File != "" && f.File != "<autogenerated>":
			dir, file := filepath.Split(f.File)
			at := filepath.Join(filepath.Base(dir), file) + ":" + strconv.Itoa(f.Line)
			if strings.HasPrefix(f.Function, lastmileModule) {
				return at
			}
			if first == "" {
				first = at
			}
		}
		if !more {
			return first
		}
	}
}

// lastmileModule begins the name of each of lastmile's functions.
const lastmileModule = "github.com/lastmile-app/lastmile/"

func inRuntime(function string) bool {
	return strings.HasPrefix(function, "runtime.") || strings.HasPrefix(function, "internal/runtime/")
}

func (w *Worker) observe(event, result string, took time.Duration) {
	if w.Observer != nil {
		w.Observer.DeliveryHandled(githubapp.KnownEvent(event), result, took)
	}
}
