package action

import (
	"context"
	"time"
)

// SetClock makes a run with env tell the time with now and wait with
// sleep: its waits for rate limits and between tries, and those of its
// default Transport.
func SetClock(env *Env, now func() time.Time, sleep func(ctx context.Context, d time.Duration) error) {
	env.now, env.sleep = now, sleep
}
