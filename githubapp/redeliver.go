package githubapp

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/pipeline"
)

// RedeliveryStore is what the redelivery poller needs from storage.
type RedeliveryStore interface {
	KnownDeliveries(ctx context.Context, ids []string) (map[string]bool, error)
	// RedeliveriesRequested and RedeliveryRequested keep, across runs, the
	// redeliveries asked for each GUID and whether lastmile gave up on it.
	RedeliveriesRequested(ctx context.Context, guids []string) (map[string]pipeline.Redeliveries, error)
	RedeliveryRequested(ctx context.Context, d pipeline.HookDelivery, gaveUp bool, at, forgetBefore time.Time) error
	// GivenUpRedeliveries lists the deliveries lastmile gave up on whose
	// first attempt was since then (GitHub's clock).
	GivenUpRedeliveries(ctx context.Context, since time.Time) ([]pipeline.HookDelivery, error)
	// RedeliveryNotRequested takes back a request counted for guid that
	// GitHub did not accept.
	RedeliveryNotRequested(ctx context.Context, guid string) error
	Setting(ctx context.Context, key string) (string, bool, error)
	SetSetting(ctx context.Context, key, value string) error
}

const redeliveryCheckpoint = "redelivery.checkpoint"

// Redeliverer asks GitHub to redeliver the webhook deliveries that never
// reached lastmile. GitHub does not redeliver failed deliveries by itself; it
// keeps them for a few days (3 on github.com, 7 on GitHub Enterprise Server)
// and offers POST /app/hook/deliveries/{id}/attempts. This follows GitHub's
// own recipe: page the App's deliveries newest first back to the last run,
// group them by GUID, and redeliver each GUID none of whose attempts
// succeeded — here also skipping GUIDs already in lastmile's inbox (stored,
// though GitHub saw the answer fail) and those of events lastmile does not
// handle, and asking a second apart.
type Redeliverer struct {
	App         *github.Client
	Store       RedeliveryStore
	Window      time.Duration // GitHub's redelivery window
	Interval    time.Duration // between runs
	MaxAttempts int           // failed attempts of one GUID after which it is left alone
	Now         func() time.Time
	// Sleep waits for d or until ctx ends; tests replace it to record waits.
	Sleep func(ctx context.Context, d time.Duration) error
	Log   *slog.Logger

	// askedAgain holds the deliveries given up in earlier runs that a check
	// at start has asked GitHub for again: once per process, however many
	// checks at start a failure elsewhere in them makes (see Run).
	askedAgain map[string]bool
}

// requestSpacing is the least time between two redelivery requests: each
// makes GitHub send a delivery again, and GitHub asks integrations to wait
// at least a second between such requests when making many, lest they meet
// its secondary rate limits.
const requestSpacing = time.Second

func (r *Redeliverer) sleep(ctx context.Context, d time.Duration) error {
	if r.Sleep != nil {
		return r.Sleep(ctx, d)
	}
	return Sleep(ctx, d)
}

// Run checks at once (RunAtStart), then every Interval (RunOnce), until
// ctx ends. A check at start that fails is made again at the next turn,
// until one succeeds: what it alone asks for (the deliveries given up in
// earlier runs, whose cause the restart may have fixed) is not lost to
// GitHub's failing the moment lastmile started — each of them asked for
// once, however many turns that takes.
func (r *Redeliverer) Run(ctx context.Context) {
	check := r.RunAtStart
	for {
		n, err := check(ctx)
		if err == nil {
			check = r.RunOnce
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.Log.Warn("redelivery: check failed", "error", Tidy(err))
		} else if n > 0 {
			r.Log.Info("redelivery: asked GitHub to redeliver missed deliveries", "count", n)
		}
		t := time.NewTimer(r.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// RunOnce performs one check and returns how many redeliveries it requested.
func (r *Redeliverer) RunOnce(ctx context.Context) (int, error) { return r.check(ctx, false) }

// RunAtStart is the check at start: it also asks, once more, for the
// deliveries lastmile gave up on in earlier runs, still within GitHub's
// window — however long before the look back, from what the store kept of
// them: what refused them while lastmile ran — a wrong webhook secret, a
// proxy or its certificate — is what a restart often follows the fix of,
// and GitHub would redeliver them still.
func (r *Redeliverer) RunAtStart(ctx context.Context) (int, error) { return r.check(ctx, true) }

func (r *Redeliverer) check(ctx context.Context, again bool) (int, error) {
	now := r.Now()
	var last time.Time // the last run's checkpoint, GitHub's clock
	if s, ok, err := r.Store.Setting(ctx, redeliveryCheckpoint); err != nil {
		return 0, err
	} else if ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			last = t
		}
	}

	// The failed attempts, by delivery (GUID); of the deliveries with an
	// attempt that succeeded, only their GUIDs, compactly: a busy App's
	// window holds a hundred thousand deliveries and more, nearly all of
	// them answered at once.
	groups := map[string]*group{}
	var succeeded guidSet
	var order []string
	// The checkpoint and the cutoff are compared with delivered_at, GitHub's
	// clock, and so are kept in it: from lastmile's clock, one an hour or
	// more ahead would pass over the deliveries that failed since the last
	// run. checkpoint is GitHub's time when the listing began (the first
	// page's Date), else the newest delivered_at listed: never later than
	// what GitHub has shown.
	var cutoff, checkpoint, newest time.Time
	windowStart := now.Add(-r.Window) // GitHub's clock, once its first page tells it
	opts := &github.ListCursorOptions{PerPage: 100}
	for {
		page, resp, err := r.App.Apps.ListHookDeliveries(ctx, opts)
		if err != nil {
			return 0, fmt.Errorf("list hook deliveries: %w", err)
		}
		if opts.Cursor == "" { // the first page
			ghNow := now // without a Date, the window by lastmile's clock
			if date, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
				ghNow, checkpoint = date, date
			}
			cutoff = ghNow.Add(-r.Window)
			windowStart = cutoff
			// Look an hour before the last run: a delivery attempted
			// around it may have been listed after that run had read the
			// page. A checkpoint later than GitHub's now (kept by
			// lastmile's clock, before) counts as now.
			if last.After(ghNow) {
				last = ghNow
			}
			if !last.IsZero() && last.Add(-time.Hour).After(cutoff) {
				cutoff = last.Add(-time.Hour)
			}
		}
		older := false
		for _, d := range page {
			if d.DeliveredAt != nil && d.DeliveredAt.Before(cutoff) {
				older = true
				break
			}
			if d.DeliveredAt != nil && d.DeliveredAt.After(newest) {
				newest = d.DeliveredAt.Time
			}
			guid := d.GetGUID()
			if d.GetStatus() == "OK" {
				succeeded.add(guid)
				continue
			}
			g, seen := groups[guid]
			if !seen {
				g = &group{latestID: d.GetID(), event: d.GetEvent(), status: d.GetStatus(), installation: d.GetInstallationID()}
				groups[guid] = g
				order = append(order, guid)
			}
			if d.DeliveredAt != nil {
				g.first = d.DeliveredAt.Time
			}
			g.firstID = d.GetID()
			g.failures++
		}
		if older || resp.Cursor == "" || len(page) == 0 {
			break
		}
		opts.Cursor = resp.Cursor
	}

	// A delivery of an event lastmile does not handle (ping among them)
	// would only be recorded as ignored: not worth a request. They are
	// asked for in the order of their earliest attempt this listing
	// reaches (one first sent before it, asked for again since, by those
	// later attempts), so that they mostly reach the inbox — and each
	// repository's queue — in the order of the events (GitHub lists them
	// newest first).
	var failed []string
	for _, guid := range order {
		if g := groups[guid]; !succeeded.has(guid) && Handles(g.event) {
			failed = append(failed, guid)
		}
	}
	if again {
		// Those given up on before the listing's look back, which it did
		// not reach.
		givenUp, err := r.Store.GivenUpRedeliveries(ctx, windowStart)
		if err != nil {
			return 0, err
		}
		for _, d := range givenUp {
			if _, listed := groups[d.GUID]; listed || succeeded.has(d.GUID) || !Handles(d.Event) {
				continue
			}
			groups[d.GUID] = &group{latestID: d.AttemptID, event: d.Event, status: "given up before",
				first: d.FirstAttempt, firstID: d.AttemptID}
			failed = append(failed, d.GUID)
		}
	}
	slices.SortFunc(failed, func(a, b string) int {
		ga, gb := groups[a], groups[b]
		return cmp.Or(ga.first.Compare(gb.first), cmp.Compare(ga.firstID, gb.firstID))
	})
	known, err := r.Store.KnownDeliveries(ctx, failed)
	if err != nil {
		return 0, err
	}
	// This run sees only the recent attempts: the redeliveries asked in
	// earlier runs are counted in the store.
	asked, err := r.Store.RedeliveriesRequested(ctx, failed)
	if err != nil {
		return 0, err
	}
	requested, failures, inARow := 0, 0, 0
	var firstFailure error
	asking := false // a request was made this run
	for _, guid := range failed {
		g := groups[guid]
		if known[guid] {
			continue
		}
		if asked[guid].GaveUp && !again {
			continue
		}
		// Every redelivery asked for failed (or is still under way), on
		// top of GitHub's first attempt.
		attempts := max(g.failures, asked[guid].Requests+1)
		if r.MaxAttempts > 0 && attempts >= r.MaxAttempts && !again {
			r.Log.Warn("redelivery: giving up on a delivery that keeps failing", "delivery", guid,
				"event", g.event, "attempts", attempts, "status", g.status)
			if err := r.Store.RedeliveryRequested(ctx, g.delivery(guid), true, now, now.Add(-r.Window)); err != nil {
				return requested, err
			}
			continue
		}
		// Given up before: asked for once more, once in this process.
		onceMore := again && (asked[guid].GaveUp || r.MaxAttempts > 0 && attempts >= r.MaxAttempts)
		if onceMore && r.askedAgain[guid] {
			continue
		}
		if asking {
			if err := r.sleep(ctx, requestSpacing); err != nil {
				return requested, err
			}
		}
		asking = true
		// Counted before it is asked, and taken back if GitHub does not
		// accept the request: only an accepted request made GitHub attempt
		// the delivery again (a 5xx GitHub acted on all the same shows in
		// its list of attempts, which the cap counts too). A crash in
		// between errs on the side of asking less, and so does a run
		// cancelled during the request (which may have reached GitHub).
		if err := r.Store.RedeliveryRequested(ctx, g.delivery(guid), false, now, now.Add(-r.Window)); err != nil {
			return requested, err
		}
		_, _, err := r.App.Apps.RedeliverHookDelivery(ctx, g.latestID)
		var accepted *github.AcceptedError
		var refused *github.ErrorResponse
		ok := err == nil || errors.As(err, &accepted)
		never := errors.As(err, &refused) && refused.Response != nil &&
			(refused.Response.StatusCode == http.StatusNotFound || refused.Response.StatusCode == http.StatusUnprocessableEntity)
		if onceMore && (ok || never) {
			if r.askedAgain == nil {
				r.askedAgain = map[string]bool{}
			}
			r.askedAgain[guid] = true // GitHub answered it: not asked again
		}
		switch {
		case ok:
		case never:
			// GitHub will not redeliver this one (gone, or no longer
			// possible): the others are still asked for.
			r.Log.Warn("redelivery: GitHub refused to redeliver", "delivery", guid, "event", g.event, "error", Tidy(err))
			// With no attempt to name: a check at start does not ask for
			// it again from the store (only if its listing shows it).
			refusedForGood := g.delivery(guid)
			refusedForGood.AttemptID = pipeline.RefusedForGood
			if err := r.Store.RedeliveryRequested(ctx, refusedForGood, true, now, now.Add(-r.Window)); err != nil {
				return requested, err
			}
			inARow = 0
			continue
		case ctx.Err() != nil:
			return requested, err
		default:
			if err := r.Store.RedeliveryNotRequested(ctx, guid); err != nil {
				return requested, err
			}
			err = fmt.Errorf("redeliver %s: %w", guid, err)
			if rateLimited(err) {
				// GitHub asked to wait: the rest waits for the next run.
				return requested, err
			}
			// A failed request (5xx, network error) says nothing about
			// the delivery: the run goes on with the others, so that one
			// delivery GitHub keeps failing on does not hold them up, but
			// stops after maxFailuresInARow, as GitHub is then likely
			// unwell. Either way the run ends in an error and leaves the
			// checkpoint, so that the next run asks again.
			failures++
			inARow++
			if firstFailure == nil {
				firstFailure = err
			}
			if inARow >= maxFailuresInARow {
				return requested, fmt.Errorf("%d redelivery requests failed in a row, stopped for this run: %w", inARow, err)
			}
			r.Log.Warn("redelivery: request failed, asked again next run", "delivery", guid, "event", g.event, "error", Tidy(err))
			continue
		}
		inARow = 0
		r.Log.Info("redelivery: requested", "delivery", guid, "event", g.event,
			"installation", g.installation, "last_status", g.status)
		requested++
	}
	if firstFailure != nil {
		return requested, fmt.Errorf("%d redelivery requests failed, asked again next run; the first: %w", failures, firstFailure)
	}
	if checkpoint.IsZero() {
		checkpoint = newest
	}
	if checkpoint.IsZero() {
		return requested, nil // GitHub showed no time: the last run's stays
	}
	return requested, r.Store.SetSetting(ctx, redeliveryCheckpoint, checkpoint.UTC().Format(time.RFC3339Nano))
}

// group is one delivery's failed attempts, as a check lists them.
type group struct {
	failures     int
	latestID     int64 // the newest failed attempt, to redeliver
	event        string
	status       string
	installation int64
	first        time.Time // its first attempt seen (GitHub lists the newest first)
	firstID      int64     // and that attempt's ID (they grow: ties within a second)
}

// delivery is what the store keeps of the delivery guid.
func (g *group) delivery(guid string) pipeline.HookDelivery {
	return pipeline.HookDelivery{GUID: guid, AttemptID: g.latestID, Event: g.event, FirstAttempt: g.first}
}

// maxFailuresInARow is how many redelivery requests may fail one after the
// other (5xx, network errors) before a run stops asking.
const maxFailuresInARow = 3

// rateLimited reports whether err is a rate limit: the transport's, or
// go-github's own refusal while the last answer said to wait.
func rateLimited(err error) bool {
	_, limited := IsRateLimited(err)
	return limited
}

// guidSet is a set of delivery GUIDs: GitHub's are UUIDs, kept as their 16
// bytes; any other as it is.
type guidSet struct {
	uuids  map[[16]byte]struct{}
	others map[string]struct{}
}

func (s *guidSet) add(guid string) {
	if u, ok := parseUUID(guid); ok {
		if s.uuids == nil {
			s.uuids = map[[16]byte]struct{}{}
		}
		s.uuids[u] = struct{}{}
		return
	}
	if s.others == nil {
		s.others = map[string]struct{}{}
	}
	s.others[guid] = struct{}{}
}

func (s *guidSet) has(guid string) bool {
	if u, ok := parseUUID(guid); ok {
		_, in := s.uuids[u]
		return in
	}
	_, in := s.others[guid]
	return in
}

// parseUUID reads a UUID in the form GitHub writes its GUIDs (8-4-4-4-12
// lower-case hex digits); ok is false for anything else, kept as it is —
// an upper-case one among them, another string to GitHub.
func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' || strings.ToLower(s) != s {
		return u, false
	}
	digits := s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(u[:], []byte(digits)); err != nil {
		return u, false
	}
	return u, true
}
