package pipeline

// SetAdvanceWaits sets the hook called when an advance of a repository has
// to wait for another one (tests of the per-repository lock).
func SetAdvanceWaits(e *Engine, f func()) { e.advanceWaits = f }
