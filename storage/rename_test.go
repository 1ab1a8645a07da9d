package storage_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// renamedLedger is acme/shop (ID 42) with release 1 deployed to production
// (at t0 - 2h), then renamed acme/store by a push at t0.
func renamedLedger(t *testing.T, t0 time.Time) (*caseLedger, pipeline.Repo) {
	t.Helper()
	ctx := context.Background()
	db := storagetest.Open(t)
	db.Now = func() time.Time { return t0.Add(time.Hour) }
	shop := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	if err := db.SaveRepo(ctx, shop, t0.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	l := &caseLedger{t: t, db: db, repo: shop, github: 1000}
	d := l.deploy(l.release(1, "production", t0.Add(-2*time.Hour)), t0.Add(-2*time.Hour))
	l.status(d, pipeline.DeploymentSuccess, t0.Add(-110*time.Minute))
	store := shop
	store.Name = "store"
	if err := db.SaveRepo(ctx, store, t0); err != nil {
		t.Fatal(err)
	}
	return l, shop
}

// repositorySeries lists the series of the delivery metrics that carry a
// repository label, as "name{labels}=value" (a histogram's value is its
// count).
func repositorySeries(t *testing.T, db *storage.DB) []string {
	t.Helper()
	snap, err := db.MetricsSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, name := range []string{metrics.DeploymentsTotal, metrics.EnvironmentInfo, metrics.LastSuccess} {
		for _, s := range append(snap.Counters[name], snap.Gauges[name]...) {
			out = append(out, fmt.Sprintf("%s%v=%v", name, s.Labels, s.Value))
		}
	}
	slices.Sort(out)
	return out
}

// A push made before a rename but handled after it (a redelivery, or a
// dead delivery an operator retried) carries the old name: it does not put
// that name back. The repository is still found by its name, and its
// environments and delivery series stay under it.
func TestALatePushDoesNotRenameTheRepositoryBack(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	l, shop := renamedLedger(t, t0)
	before := repositorySeries(t, l.db)

	if err := l.db.SaveRepo(ctx, shop, t0.Add(-time.Hour)); err != nil { // the late push
		t.Fatal(err)
	}
	if rec, err := l.db.Audit(ctx, "acme/store", fmt.Sprintf("%040d", 1)); err != nil {
		t.Errorf("audit of acme/store after a late push under acme/shop: %v", err)
	} else if got := rec.Release.Repo.FullName(); got != "acme/store" {
		t.Errorf("release recorded under %s, want acme/store", got)
	}
	if got := repositorySeries(t, l.db); !slices.Equal(got, before) {
		t.Errorf("series after the late push:\n got %v\nwant %v (as before it: under acme/store)", got, before)
	}
	// What the late push brought is counted under the current name.
	d := l.deploy(l.release(2, "production", t0.Add(-time.Hour)), t0.Add(time.Minute))
	l.status(d, pipeline.DeploymentSuccess, t0.Add(2*time.Minute))
	for _, want := range []string{
		metrics.DeploymentsTotal + "[acme/shop production success]=1",
		metrics.DeploymentsTotal + "[acme/store production success]=1",
		metrics.EnvironmentInfo + "[acme/store production true]=1",
	} {
		if got := repositorySeries(t, l.db); !slices.Contains(got, want) {
			t.Errorf("series after a deployment of the late push's release: %v; want %s", got, want)
		}
	}

	// A push after the rename under the old name again (renamed back) is
	// recorded.
	if err := l.db.SaveRepo(ctx, shop, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	rec, err := l.db.Audit(ctx, "acme/shop", fmt.Sprintf("%040d", 1))
	if err != nil || rec.Release.Repo.FullName() != "acme/shop" {
		t.Fatalf("audit of acme/shop renamed back: %v, %v; want its release, under acme/shop", rec, err)
	}
}
