package storage_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/lastmile-app/lastmile/storage"
)

// BenchmarkPlannerReads is what the engine reads of a repository at each
// advance (RepoState, HeldBy for an environment) and for a protection-rule
// decision (NewestSuccess, Succeeded), with a short and a long history of
// deployments in one repository: the cost should not follow the history.
//
//	go test ./storage -run '^$' -bench PlannerReads -benchtime 200x
func BenchmarkPlannerReads(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{300, 60_000} {
		b.Run(fmt.Sprintf("deployments=%d", n), func(b *testing.B) {
			db := generated(b, n)
			const id = 1000 // Generate's first repository
			if repos, err := db.Repos(ctx, []int64{id}); err != nil || len(repos) != 1 {
				b.Fatalf("repository %d: %v, %v", id, repos, err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := db.RepoState(ctx, id); err != nil {
					b.Fatal(err)
				}
				if _, err := db.HeldBy(ctx, id, "production"); err != nil {
					b.Fatal(err)
				}
				if _, _, err := db.NewestSuccess(ctx, id, "production"); err != nil {
					b.Fatal(err)
				}
				if _, err := db.Succeeded(ctx, id, "0123456789abcdef0123456789abcdef01234567", "production"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStatus is lastmile status (and GET /api/v1/status) with a short
// and a long history of deployments in one repository: it reads a few
// rows per environment, however long the history.
//
//	go test ./storage -run '^$' -bench 'Status$' -benchtime 200x
func BenchmarkStatus(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{300, 60_000} {
		b.Run(fmt.Sprintf("deployments=%d", n), func(b *testing.B) {
			db := generated(b, n)
			list, err := db.Status(ctx, "")
			if err != nil || len(list) != 3 || list[2].Live == nil {
				b.Fatalf("status: %+v, %v; want three environments, production live", list, err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := db.Status(ctx, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// generated is a database with n deployments and n commits of history in
// one repository (Generate's), closed when the benchmark ends.
func generated(b *testing.B, n int) *storage.DB {
	b.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, filepath.Join(b.TempDir(), "lastmile.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.Generate(ctx, storage.GenerateOptions{Repositories: 1, Deployments: n, Commits: n}, nil); err != nil {
		b.Fatal(err)
	}
	return db
}
