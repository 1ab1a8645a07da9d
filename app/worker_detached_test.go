package app_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/app"
	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
)

// A repository recorded as removed from its installation (it may
// have been added back since, its installation_repositories "added" event
// not handled yet: that event is in the installation's queue, not the
// repository's). A delivery of it that fails for a transient reason — a
// rate limit GitHub asks lastmile to wait out, a 502 — is postponed or
// retried as any other: ignored, a delivery answered 2xx would be lost.
// Only GitHub refusing the repository (404) has it ignored.
func TestTransientFailureOfADetachedRepositoryIsNotLost(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		err  error
		want pipeline.DeliveryState
	}{
		"rate limited": {&githubapp.RateLimitedError{Until: now.Add(10 * time.Minute), Secondary: true, Status: 429}, pipeline.DeliveryPending},
		"502":          {errors.New("POST https://api.github.com/repos/acme/shop/actions/runs/9/deployment_protection_rule: 502 Bad Gateway"), pipeline.DeliveryPending},
		// GitHub refusing the repository, as it does one removed.
		"404": {fmt.Errorf("read .github/lastmile.yml: %w", pipeline.ErrNotFound), pipeline.DeliveryIgnored},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db := workerDB(t)
			db.Now = func() time.Time { return now }
			repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
			if err := db.SaveRepo(ctx, repo, now.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := db.DetachRepo(ctx, repo.ID, now.Add(-30*time.Minute)); err != nil { // removal handled
				t.Fatal(err)
			}
			d := &pipeline.Delivery{ID: "d-1", Event: "deployment_protection_rule", Action: "requested", Repository: "acme/shop",
				RepositoryID: 42, InstallationID: 7, Body: []byte(`{}`), State: pipeline.DeliveryPending, ReceivedAt: now.Add(-time.Second)}
			if _, err := db.Accept(ctx, d, "deployment_protection_rule", githubapp.OutcomeAccepted); err != nil {
				t.Fatal(err)
			}
			obs := make(outcomes, 10)
			stop := startWorker(t, &app.Worker{Inbox: db, Installations: db, Observer: obs, MaxAttempts: 5,
				Handler: handlerFunc(func(context.Context, *pipeline.Delivery) error { return tc.err }),
				Now:     func() time.Time { return now }, Backoff: func(int) time.Duration { return 7 * time.Second }})
			obs.next(t, 1, 10*time.Second)
			stop()
			got := delivery(t, db, "d-1")
			if got.State != tc.want {
				t.Errorf("delivery after a %s failure: %s (note %q); want %s", name, got.State, got.Note, tc.want)
			}
		})
	}
}
