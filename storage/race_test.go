//go:build race

package storage

// raceEnabled: the race detector makes sync.Pool drop some of what it is
// given, so pooled buffers (s2's own tables among them) are made again.
const raceEnabled = true
