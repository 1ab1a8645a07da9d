package githubapp

// Held is the bytes of bodies the webhook holds now, read or set aside for
// them (for tests: a condition to wait on).
func (h *Webhook) Held() int64 { return h.held.Load() }
