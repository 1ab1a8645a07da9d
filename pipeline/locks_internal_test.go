package pipeline

import (
	"sync"
	"testing"
)

// The locks of repositories are kept only while held or waited for, and
// exclude each other while they are.
func TestKeyedLocksAreDroppedOnceFree(t *testing.T) {
	var locks keyedLocks
	for id := int64(1); id <= 1000; id++ {
		lockIn(&locks, id, nil)()
	}
	if n := len(locks.locks); n != 0 {
		t.Errorf("%d locks kept after every one was let go", n)
	}
	// Many goroutines on a few IDs: one holder per ID at a time.
	var wg sync.WaitGroup
	var mu sync.Mutex
	holders := map[int64]int{}
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := int64((g + i) % 3)
				unlock := lockIn(&locks, id, nil)
				mu.Lock()
				holders[id]++
				if holders[id] != 1 {
					t.Errorf("%d holders of lock %d at once", holders[id], id)
				}
				mu.Unlock()
				mu.Lock()
				holders[id]--
				mu.Unlock()
				unlock()
			}
		}()
	}
	wg.Wait()
	if n := len(locks.locks); n != 0 {
		t.Errorf("%d locks kept after the goroutines let go", n)
	}
}
