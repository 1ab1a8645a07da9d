package storage

import (
	"bytes"
	"runtime"
	"testing"
)

// Compressing a body holds at most one buffer of half the body's size
// beside it: a large body that does not compress (a flood of them is
// bounded by the webhook's budget for bodies, which does not count this
// buffer) is given up as soon as the compressed form would reach half its
// size.
func TestPackBodyAllocatesHalfTheBodyAtMost(t *testing.T) {
	noisy := noise(8 << 20)
	repetitive := bytes.Repeat([]byte(`{"id":1,"url":"https://api.github.com/repos/acme/shop"},`), (8<<20)/56)
	for name, body := range map[string][]byte{"does not compress": noisy, "compresses": repetitive} {
		packBody(body) // the pool's writer made
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		const n = 4
		var kept []byte
		for range n {
			kept = packBody(body)
		}
		runtime.ReadMemStats(&after)
		perCall := float64(after.TotalAlloc-before.TotalAlloc) / n
		bound := len(body)/2 + 128<<10
		if raceEnabled { // s2's pooled 64 KB table, made again for some chunks
			bound += len(body) / maxChunk * 64 << 10
		}
		if perCall > float64(bound) {
			t.Errorf("%s: %.1f MB allocated per %.1f MB body, want half the body's size and a chunk's scratch space at most", name, perCall/(1<<20), float64(len(body))/(1<<20))
		}
		if name == "does not compress" && &kept[0] != &body[0] {
			t.Errorf("%s: kept a copy, want the body as received", name)
		}
		if name == "compresses" && len(kept) >= len(body)/4 {
			t.Errorf("%s: kept %d bytes of %d", name, len(kept), len(body))
		}
	}
}
