// Package storagetest opens lastmile databases for tests.
package storagetest

import (
	"context"
	"database/sql"
	"math/rand/v2"
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

// HoldWriteLock opens the database at path on a connection of its own and
// begins a write transaction there (BEGIN IMMEDIATE), as a lastmile serve
// in the middle of a write holds it: until tb ends, no other connection
// can write. It returns that connection, to write in the transaction
// (never committed: it is rolled back when tb ends).
func HoldWriteLock(tb testing.TB, path string) *sql.Conn {
	tb.Helper()
	ctx := context.Background()
	writer, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { writer.Close() })
	conn, err := writer.Conn(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.ExecContext(ctx, "ROLLBACK") })
	return conn
}

// Noise returns n bytes of hex digits that do not compress: the bodies of
// tests that measure what a database holds, since lastmile keeps
// compressible bodies smaller than they came.
func Noise(n int) []byte {
	rng := rand.New(rand.NewPCG(uint64(n), 0x5eed))
	out := make([]byte, n)
	for i := range out {
		out[i] = "0123456789abcdef"[rng.IntN(16)]
	}
	return out
}
