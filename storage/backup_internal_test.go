package storage

import (
	"context"
	"path/filepath"
	"testing"
)

// A database an older lastmile wrote (a backup made before an upgrade) is
// copied, said to be older, and the copy is one this version's Open
// migrates; one without the migrations table is no lastmile database.
func TestCopyDatabaseOfAnOlderLastmile(t *testing.T) {
	ctx := context.Background()
	files, err := migrationFiles()
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "old.db")
	db, err := openUpTo(ctx, src, files[len(files)-1].version-1)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "backup.db")
	c, err := CopyDatabase(ctx, src, dest)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Summary.Older {
		t.Errorf("the copy of an older lastmile's database is not said to be older: %+v", c.Summary)
	}
	if err := c.Place(); err != nil {
		t.Fatal(err)
	}
	if err := checkSchema(ctx, dest); err == nil {
		t.Error("the copy has every migration already")
	}
	migrated, err := Open(ctx, dest)
	if err != nil {
		t.Fatalf("Open of the copy: %v", err)
	}
	migrated.Close()
	if err := checkSchema(ctx, dest); err != nil {
		t.Errorf("the copy, migrated: %v", err)
	}
	c, err = CopyDatabase(ctx, dest, filepath.Join(t.TempDir(), "again.db"))
	if err != nil || c.Summary.Older {
		t.Errorf("copy of a database of this version: %+v, %v", c, err)
	}
	c.Remove()
}
