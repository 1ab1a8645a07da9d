package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Migration 0024 dates the names recorded before it by the newest push of
// the pipeline branch handled: a push older than that, handled after the
// upgrade under another name (a dead delivery retried), does not put that
// name back; a repository with no push handled takes the next name it is
// given. The repositories keep what they recorded.
func TestNameAtMigrationDatesTheRecordedNames(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := openUpTo(ctx, path, 23)
	if err != nil {
		t.Fatal(err)
	}
	pushed := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	if _, err := db.write.ExecContext(ctx, `INSERT INTO repositories (id, full_name, installation_id, pipeline_branch, updated_at, last_push_at)
		VALUES (42, 'acme/store', 7, 'main', 1, ?), (43, 'acme/api', 7, '', 1, 0)`, pushed.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = Open(ctx, path); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	defer db.Close()
	var nameAt, installation int64
	var branch string
	if err := db.read.QueryRowContext(ctx, `SELECT name_at, installation_id, pipeline_branch FROM repositories WHERE id = 42`).Scan(&nameAt, &installation, &branch); err != nil {
		t.Fatal(err)
	}
	if nameAt != pushed.UnixMilli() || installation != 7 || branch != "main" {
		t.Errorf("after the migration: name_at %d, installation %d, branch %q; want %d (the last push), 7, main", nameAt, installation, branch, pushed.UnixMilli())
	}
	for _, r := range []pipeline.Repo{
		{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7},   // pushed before the last push handled
		{ID: 43, Owner: "acme", Name: "api-v2", InstallationID: 7}, // renamed: no push known
	} {
		if err := db.SaveRepo(ctx, r, pushed.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[int64]string{42: "acme/store", 43: "acme/api-v2"} {
		if got, err := repoNameOf(ctx, db, id); err != nil || got != want {
			t.Errorf("repository %d: %q, %v; want %s", id, got, err, want)
		}
	}
}

func repoNameOf(ctx context.Context, db *DB, id int64) (string, error) {
	var name string
	err := db.read.QueryRowContext(ctx, `SELECT full_name FROM repositories WHERE id = ?`, id).Scan(&name)
	return name, err
}

// Migration 0025 keeps, as names a repository had, those its deliveries
// came under other than its current one (in any case: one name), each
// with the newest delivery under it; names of repositories lastmile has
// no record of are not kept. A lookup by such a name then finds the
// repository.
func TestRepositoryNamesMigrationKeepsTheNamesOfTheDeliveries(t *testing.T) {
	ctx := context.Background()
	db := upgradedFrom(t, 24,
		`INSERT INTO repositories (id, full_name, installation_id, updated_at) VALUES (42, 'acme/store', 7, 1), (43, 'acme/api', 7, 1)`,
		`INSERT INTO deliveries (delivery_id, event, repository_id, repository, received_at, state) VALUES
			('d1', 'push', 42, 'acme/shop', 1000, 'done'), ('d2', 'push', 42, 'Acme/Shop', 2000, 'done'),
			('d3', 'push', 42, 'acme/store', 3000, 'done'), ('d4', 'push', 42, 'acme/old-shop', 500, 'dead'),
			('d5', 'push', 43, 'ACME/API', 4000, 'done'), ('d6', 'push', 44, 'acme/unknown', 5000, 'done'),
			('d7', 'installation', 0, '', 6000, 'done')`,
	)
	rows, err := db.read.QueryContext(ctx, `SELECT repository_id, lower(full_name), until_at FROM repository_names ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id, until int64
		var name string
		if err := rows.Scan(&id, &name, &until); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d %s %d", id, name, until))
	}
	if want := []string{"42 acme/old-shop 500", "42 acme/shop 2000"}; !slices.Equal(got, want) {
		t.Errorf("names after the migration: %q, want %q", got, want)
	}
	for _, name := range []string{"acme/shop", "acme/old-shop", "acme/store"} {
		if _, err := db.History(ctx, HistoryFilter{Repository: name}); err != nil {
			t.Errorf("history --repo %s after the migration: %v", name, err)
		}
	}
	if _, err := db.History(ctx, HistoryFilter{Repository: "acme/unknown"}); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("history --repo acme/unknown (a repository lastmile has no record of): %v, want not found", err)
	}
}
