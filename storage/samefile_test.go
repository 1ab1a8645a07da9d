package storage_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// A database file removed or replaced under lastmile serve (a backup moved
// over it): the readiness probe says so, and the intake refuses deliveries
// rather than store them where nobody reads them again (lost at the next
// start). Put back, it works again.
func TestDatabaseRemovedOrReplacedUnderIt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "lastmile.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	accept := func() error {
		n++
		_, err := db.Accept(ctx, &pipeline.Delivery{ID: fmt.Sprintf("d-%d", n), Event: "push", Repository: "a/b", Body: []byte(`{}`)}, "push", "accepted")
		return err
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := accept(); err != nil {
		t.Fatal(err)
	}

	aside := filepath.Join(dir, "aside.db")
	if err := os.Rename(path, aside); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err == nil || !strings.Contains(err.Error(), "was removed while lastmile has it open") {
		t.Errorf("ping with the file removed: %v", err)
	}
	if err := accept(); err == nil || !strings.Contains(err.Error(), "was removed") {
		t.Errorf("a delivery with the file removed: %v, want it refused", err)
	}

	// Another file at the path: a copy of it.
	body, err := os.ReadFile(aside)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err == nil || !strings.Contains(err.Error(), "was replaced by another file") {
		t.Errorf("ping with the file replaced: %v", err)
	}
	if err := accept(); err == nil {
		t.Error("a delivery with the file replaced was accepted")
	}

	// The file put back.
	if err := os.Rename(aside, path); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Errorf("ping with the file back: %v", err)
	}
	if err := accept(); err != nil {
		t.Errorf("a delivery with the file back: %v", err)
	}
}
