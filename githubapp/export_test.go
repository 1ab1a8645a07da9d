package githubapp

import "time"

// Held is the bytes of bodies the webhook holds now, read or set aside for
// them (for tests: a condition to wait on).
func (h *Webhook) Held() int64 { return h.held.Load() }

// SetRefusalClock replaces the clock of the refusal log's windows, and the
// timer of their summaries (after is called as time.AfterFunc would be).
func (h *Webhook) SetRefusalClock(now func() time.Time, after func(d time.Duration, f func())) {
	h.refusals.now, h.refusals.after = now, after
	h.storeFailures.now, h.storeFailures.after = now, after
	h.duplicates.now, h.duplicates.after = now, after
	h.deadAgain.now, h.deadAgain.after = now, after
}
