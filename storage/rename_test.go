package storage_test

import (
	"context"
	"errors"
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

// A renamed repository is found by its old name, its records showing its
// current name; a name another repository holds now finds that one, and
// of several repositories that had a name, the last to have it.
func TestARenamedRepositoryIsFoundByItsOldName(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	l, _ := renamedLedger(t, t0)
	db := l.db
	sha1 := fmt.Sprintf("%040d", 1)
	// found checks that name finds the release of sha (the newest of its
	// repository), recorded under want, in audit and in the history.
	found := func(when, name, sha, want string) {
		t.Helper()
		if rec, err := db.Audit(ctx, name, sha); err != nil {
			t.Errorf("%s: audit %s %s: %v", when, name, sha, err)
		} else if got := rec.Release.Repo.FullName(); rec.Release.SHA != sha || got != want {
			t.Errorf("%s: audit %s found %s of %s, want %s of %s", when, name, rec.Release.SHA, got, sha, want)
		}
		list, err := db.History(ctx, storage.HistoryFilter{Repository: name})
		if err != nil {
			t.Errorf("%s: history --repo %s: %v", when, name, err)
		} else if len(list) == 0 || list[0].Release.SHA != sha || list[0].Release.Repo.FullName() != want {
			var got []string
			for _, e := range list {
				got = append(got, e.Release.Repo.FullName()+"@"+e.Release.SHA)
			}
			t.Errorf("%s: history --repo %s: %v; want %s@%s first", when, name, got, want, sha)
		}
	}
	found("renamed", "acme/shop", sha1, "acme/store")
	found("renamed", "ACME/Shop", sha1, "acme/store")
	found("renamed", "acme/store", sha1, "acme/store")

	// A new repository is created as acme/shop: it holds the name now.
	shop2 := pipeline.Repo{ID: 43, Owner: "acme", Name: "shop", InstallationID: 7}
	if err := db.SaveRepo(ctx, shop2, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	l2 := &caseLedger{t: t, db: db, repo: shop2, github: 2000}
	sha7 := l2.release(7, "production", t0.Add(time.Hour)).SHA
	found("name reused", "acme/shop", sha7, "acme/shop")
	if _, err := db.Audit(ctx, "acme/shop", sha1); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("audit acme/shop of the renamed repository's commit, the name reused: %v; want not found (acme/shop is the new repository)", err)
	}
	found("name reused", "acme/store", sha1, "acme/store")

	// The new repository is renamed too: of the two that had the name, it
	// had it last.
	shop2.Name = "shop-v2"
	if err := db.SaveRepo(ctx, shop2, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	found("both renamed", "acme/shop", sha7, "acme/shop-v2")

	// A name lastmile learns only from a late event is a name the
	// repository had.
	legacy := pipeline.Repo{ID: 44, Owner: "acme", Name: "api", InstallationID: 7}
	if err := db.SaveRepo(ctx, legacy, t0); err != nil {
		t.Fatal(err)
	}
	legacy.Name = "legacy-api"
	if err := db.SaveRepo(ctx, legacy, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if list, err := db.History(ctx, storage.HistoryFilter{Repository: "acme/legacy-api"}); err != nil || len(list) != 0 {
		t.Errorf("history --repo acme/legacy-api (acme/api's name before): %v, %v; want none, no error", list, err)
	}

	if _, err := db.Audit(ctx, "acme/nothing", sha1); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("audit of a name no repository had: %v; want not found", err)
	}
}

// A repository deleted (lastmile does not hear of it) and another created
// under its name: lastmile knows two repositories by one name, and finds
// the records of both by it — the audit of a commit in whichever has it,
// the newer first; the history of both.
func TestADeletedRepositorysRecordsAreFoundByItsReusedName(t *testing.T) {
	ctx := context.Background()
	db := storagetest.Open(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return t0 }
	old := &caseLedger{t: t, db: db, repo: pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}, github: 1000}
	if err := db.SaveRepo(ctx, old.repo, t0); err != nil {
		t.Fatal(err)
	}
	first := old.release(1, "production", t0)
	db.Now = func() time.Time { return t0.Add(time.Hour) }
	recreated := &caseLedger{t: t, db: db, repo: pipeline.Repo{ID: 43, Owner: "acme", Name: "shop", InstallationID: 7}, github: 2000}
	if err := db.SaveRepo(ctx, recreated.repo, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	second := recreated.release(2, "production", t0.Add(time.Hour))

	for _, rel := range []*pipeline.Release{first, second} {
		rec, err := db.Audit(ctx, "acme/shop", rel.SHA)
		if err != nil {
			t.Errorf("audit acme/shop %s: %v", rel.SHA[:7], err)
		} else if rec.Release.ID != rel.ID || rec.Release.Repo.ID != rel.Repo.ID {
			t.Errorf("audit acme/shop %s: release #%d of repository %d; want #%d of %d", rel.SHA[:7], rec.Release.ID, rec.Release.Repo.ID, rel.ID, rel.Repo.ID)
		}
	}
	list, err := db.History(ctx, storage.HistoryFilter{Repository: "acme/shop"})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, e := range list {
		got = append(got, e.Release.ID)
	}
	if want := []int64{second.ID, first.ID}; !slices.Equal(got, want) {
		t.Errorf("history --repo acme/shop: releases %v; want %v", got, want)
	}
	// The new repository made from the same history: a commit both have
	// released is audited in the newer, and in the older by its release.
	again := recreated.release(1, "production", t0.Add(2*time.Hour))
	if again.SHA != first.SHA {
		t.Fatalf("release of the same commit: %s, want %s", again.SHA, first.SHA)
	}
	if rec, err := db.Audit(ctx, "acme/shop", first.SHA); err != nil || rec.Release.ID != again.ID {
		t.Errorf("audit acme/shop %s: %+v (%v); want the newer repository's release #%d", first.SHA[:7], rec, err, again.ID)
	}
	if rec, err := db.AuditRelease(ctx, "acme/shop", first.SHA, first.ID); err != nil || rec.Release.ID != first.ID {
		t.Errorf("audit --release %d acme/shop %s: %v; want the older repository's release", first.ID, first.SHA[:7], err)
	}
}
