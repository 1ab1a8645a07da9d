package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// A repository renamed (acme/shop to acme/store) is found by its old name
// too: `audit acme/shop SHA` and `history --repo acme/shop` show its
// release, under its current name. A push made before the rename, handled
// after it, does not take the name back: acme/store still finds it.
func TestAuditAndHistoryByTheOldNameOfARenamedRepository(t *testing.T) {
	ctx := context.Background()
	path := cliDB(t)
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	shop := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	cfg, err := pipeline.ParseConfig([]byte("environments:\n  - name: production\n"))
	if err != nil {
		t.Fatal(err)
	}
	sha := "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
	if err := db.SaveRepo(ctx, shop, t0.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	rel := &pipeline.Release{Repo: shop, SHA: sha, Ref: "refs/heads/main", PushedAt: t0.Add(-2 * time.Hour), Config: cfg, State: pipeline.ReleaseActive}
	if _, err := db.RecordRelease(ctx, rel, []pipeline.Commit{{SHA: sha, Author: "octocat", Timestamp: t0.Add(-2 * time.Hour), Title: "Ship it"}}); err != nil {
		t.Fatal(err)
	}
	store := shop
	store.Name = "store"
	for _, save := range []struct {
		repo pipeline.Repo
		at   time.Time
	}{{store, t0}, {shop, t0.Add(-time.Hour)}} { // renamed, then a late push under the old name
		if err := db.SaveRepo(ctx, save.repo, save.at); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	env := map[string]string{"LASTMILE_DATABASE": path}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "acme/shop", sha[:7]}, "Release #1 of acme/store at " + sha},
		{[]string{"audit", "acme/store", sha[:7]}, "Release #1 of acme/store at " + sha},
		{[]string{"audit", "--json", "Acme/Shop", sha}, `"name": "store"`},
		{[]string{"history", "--repo", "acme/shop"}, "acme/store"},
		{[]string{"history", "--repo", "acme/store"}, "acme/store"},
	} {
		code, stdout, stderr := runCLI(t, env, tc.args...)
		if code != 0 || !strings.Contains(stdout, tc.want) {
			t.Errorf("%v after the rename: exit %d, stdout %q, stderr %q; want exit 0 and %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	// No delivery came under the new name yet: a repository lastmile
	// knows all the same, with no deliveries to list (those that came
	// under its old name are listed by that name).
	code, stdout, stderr := runCLI(t, env, "deliveries", "--repo", "acme/store")
	if code != 0 || strings.TrimSpace(stdout) != "RECEIVED  DELIVERY  EVENT  REPOSITORY  STATE  ATTEMPTS  DETAIL" {
		t.Errorf("deliveries --repo acme/store: exit %d, stdout %q, stderr %q; want exit 0 and an empty table", code, stdout, stderr)
	}
}
