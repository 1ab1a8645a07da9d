// Package storagetest opens lastmile databases for tests.
package storagetest

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/pipeline"
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

// DeliveryIDs lists the IDs of every delivery the database at path
// holds, sorted, read as the read commands read it (OpenReadOnly).
func DeliveryIDs(tb testing.TB, path string) []string {
	tb.Helper()
	ctx := context.Background()
	db, err := storage.OpenReadOnly(ctx, path)
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	list, err := db.ListDeliveries(ctx, storage.DeliveryFilter{Limit: math.MaxInt32})
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]string, len(list))
	for i, d := range list {
		ids[i] = d.ID
	}
	slices.Sort(ids)
	return ids
}

// Exec runs statements on the SQLite file at path (created if missing)
// on a connection of its own, beside any other: tests that make a
// database as something other than lastmile would.
func Exec(tb testing.TB, path string, stmts ...string) {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			tb.Fatalf("%s: %v", s, err)
		}
	}
}

// DamagePage overwrites the start of the root page of the table or index
// name in the database at path, its WAL written into the file first: the
// database opens, and a read of name (or quick_check) finds the damage.
func DamagePage(tb testing.TB, path, name string) {
	tb.Helper()
	Exec(tb, path, "PRAGMA wal_checkpoint(TRUNCATE)")
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		tb.Fatal(err)
	}
	var root, pageSize int64
	err = raw.QueryRow("SELECT rootpage, (SELECT page_size FROM pragma_page_size) FROM sqlite_master WHERE name = ?", name).Scan(&root, &pageSize)
	raw.Close()
	if err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	_, err = f.WriteAt([]byte(strings.Repeat("\xff", 64)), (root-1)*pageSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// A BadDatabase is a file lastmile refuses to back up or restore from,
// and what the refusal says.
type BadDatabase struct{ Name, Path, Want string }

// BadDatabases makes, in a temporary folder of tb's, a file of each kind
// that is no sound lastmile database of this version or an older one: a
// missing file, a file that is no database, another program's database, a
// newer lastmile's, and a damaged one (an index's root page overwritten:
// it opens and reads its schema, but quick_check finds the damage).
func BadDatabases(tb testing.TB) []BadDatabase {
	tb.Helper()
	ctx := context.Background()
	dir := tb.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte(strings.Repeat("not SQLite\n", 1000)), 0o600); err != nil {
		tb.Fatal(err)
	}
	other := filepath.Join(dir, "other.db")
	Exec(tb, other, "CREATE TABLE notes (body TEXT)")
	var lastmile [2]string
	for i, name := range []string{"newer.db", "damaged.db"} {
		lastmile[i] = filepath.Join(dir, name)
		db, err := storage.Open(ctx, lastmile[i])
		if err != nil {
			tb.Fatal(err)
		}
		for j := range 50 {
			d := &pipeline.Delivery{ID: fmt.Sprintf("d-%d", j), Event: "push", Repository: "acme/shop", Body: Noise(1000)}
			if _, err := db.Accept(ctx, d, "push", "accepted"); err != nil {
				tb.Fatal(err)
			}
		}
		if err := db.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	Exec(tb, lastmile[0], "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, '9999_future.sql', 0)")
	damaged := lastmile[1]
	DamagePage(tb, damaged, "deliveries_received")
	return []BadDatabase{
		{"missing", filepath.Join(dir, "missing.db"), "no such file"},
		{"not a database", notes, "not a lastmile database"},
		{"another program's", other, "not a lastmile database"},
		{"a newer lastmile's", lastmile[0], "newer lastmile"},
		{"damaged", damaged, "damaged: PRAGMA quick_check"},
	}
}
