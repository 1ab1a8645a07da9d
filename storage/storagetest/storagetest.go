// Package storagetest opens lastmile databases for tests.
package storagetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/lastmile-app/lastmile/storage"
)

// Open opens a new database in a temporary directory of tb's, closed when
// tb ends.
func Open(tb testing.TB) *storage.DB {
	tb.Helper()
	db, err := storage.Open(context.Background(), filepath.Join(tb.TempDir(), "lastmile.db"))
	if err != nil {
		tb.Fatalf("open database: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
