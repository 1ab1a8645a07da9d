package githubapp

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// RefusalLinesPerMinute bounds the WARN lines of refused deliveries (a
// wrong or missing signature, a body too large or compressed, the intake
// too busy, a header or body lastmile cannot take): each minute's first
// ones are logged one by one; past them, the refusals are counted and
// logged in one line when that minute ends. Unbounded, one line a request,
// anyone on the internet could fill the disk — with forged requests, or
// with a signed body seen once (the signature covers no header) sent again
// and again. lastmile_webhook_deliveries_total counts every refusal.
const RefusalLinesPerMinute = 20

// refusalLog is the bound on those lines: a window opens at a refusal
// logged once the previous window has ended, and holds limit lines in
// full; the refusals past them are counted, and summed up in one line
// when the window ends (or, if the timer has not run yet, at the first
// refusal after it).
type refusalLog struct {
	log *slog.Logger
	// level, msg and summary are its lines' level and messages.
	level        slog.Level
	msg, summary string
	limit        int
	window       time.Duration
	now          func() time.Time
	after        func(d time.Duration, f func()) // time.AfterFunc; tests run f themselves

	mu     sync.Mutex
	start  time.Time // of the current window
	logged int       // lines logged in full in it
	held   refusalsHeld
	gen    uint64 // the held refusals' window, for their timer to tell it still is
}

// refusalsHeld are the refusals of a window past its limit.
type refusalsHeld struct {
	count     int
	byOutcome map[string]int
	last      refusedLine
}

// refusedLine is what the line of a refusal says.
type refusedLine struct {
	delivery, event, reason, remote string
	status                          int
	outcome                         string
}

func newRefusalLog(log *slog.Logger) *refusalLog {
	return &refusalLog{log: log, level: slog.LevelWarn, msg: "webhook: delivery refused",
		summary: "webhook: more deliveries refused in the last minute than logged one by one",
		limit:   RefusalLinesPerMinute, window: time.Minute, now: time.Now,
		after: func(d time.Duration, f func()) { time.AfterFunc(d, f) }}
}

// newDuplicateLog bounds the INFO lines of deliveries received again (the
// same X-GitHub-Delivery), answered 200 and stored once: a signed body seen
// once can be sent again and again under its own delivery ID.
func newDuplicateLog(log *slog.Logger) *refusalLog {
	l := newRefusalLog(log)
	l.level, l.msg = slog.LevelInfo, "webhook: delivery received again, stored once already"
	l.summary = "webhook: more deliveries received again in the last minute than logged one by one"
	return l
}

// newDeadAgainLog bounds, as newRefusalLog bounds the refusals', the WARN
// lines of deliveries received again whose stored copy is dead: GitHub's
// redelivery does not make lastmile handle them again, its retry does.
func newDeadAgainLog(log *slog.Logger) *refusalLog {
	l := newRefusalLog(log)
	l.level, l.msg = slog.LevelWarn, "webhook: a dead delivery received again is not handled again"
	l.summary = "webhook: more dead deliveries received again in the last minute than logged one by one"
	return l
}

// newStoreFailureLog bounds the ERROR lines of deliveries that could not
// be stored (a full disk, a database that cannot be written) as
// newRefusalLog bounds the refusals': each one a line, every delivery
// GitHub sends would fill what little room is left.
func newStoreFailureLog(log *slog.Logger) *refusalLog {
	l := newRefusalLog(log)
	l.level, l.msg = slog.LevelError, "webhook: store delivery"
	l.summary = "webhook: more deliveries could not be stored in the last minute than logged one by one"
	return l
}

// refused logs rf in full if the window has room for it, else counts it
// for the window's summary.
func (l *refusalLog) refused(rf refusedLine) {
	l.mu.Lock()
	t := l.now()
	var ended refusalsHeld
	if l.start.IsZero() || t.Sub(l.start) >= l.window || t.Before(l.start) {
		ended = l.takeLocked() // if its timer has not run yet
		l.start, l.logged = t, 0
	}
	full := l.logged < l.limit
	if full {
		l.logged++
	} else {
		if l.held.count == 0 {
			gen := l.gen
			l.after(l.start.Add(l.window).Sub(t), func() { l.flush(gen) })
			l.held.byOutcome = map[string]int{}
		}
		l.held.count++
		l.held.byOutcome[rf.outcome]++
		l.held.last = rf
	}
	l.mu.Unlock()
	l.summarize(ended)
	if full {
		l.line(rf)
	}
}

// line logs one refusal in full.
func (l *refusalLog) line(rf refusedLine) {
	l.log.Log(context.Background(), l.level, l.msg, "delivery", rf.delivery, "event", rf.event,
		"status", rf.status, "reason", rf.reason, "remote", rf.remote)
}

// flush logs the summary of the window gen, unless it was logged already.
func (l *refusalLog) flush(gen uint64) {
	l.mu.Lock()
	var ended refusalsHeld
	if gen == l.gen {
		ended = l.takeLocked()
	}
	l.mu.Unlock()
	l.summarize(ended)
}

// takeLocked takes the window's held refusals, for their summary.
func (l *refusalLog) takeLocked() refusalsHeld {
	held := l.held
	if held.count > 0 {
		l.held = refusalsHeld{}
		l.gen++
	}
	return held
}

func (l *refusalLog) summarize(held refusalsHeld) {
	if held.count == 0 {
		return
	}
	var outcomes []any
	for _, o := range slices.Sorted(maps.Keys(held.byOutcome)) {
		outcomes = append(outcomes, slog.Int(o, held.byOutcome[o]))
	}
	l.log.Log(context.Background(), l.level, l.summary,
		"more", held.count, "logged", l.limit, slog.Group("outcomes", outcomes...),
		"last_status", held.last.status, "last_reason", held.last.reason, "last_remote", held.last.remote,
		"metric", "lastmile_webhook_deliveries_total counts each")
}
