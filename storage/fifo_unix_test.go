//go:build unix

package storage_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/storage"
)

// A database path that names a FIFO is refused at once by every way of
// opening one: opening it would wait for a writer, for ever.
func TestOpenRefusesAFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "lastmile.db")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func(context.Context, string) (*storage.DB, error){
		"Open": storage.Open, "OpenExisting": storage.OpenExisting, "OpenReadOnly": storage.OpenReadOnly,
	} {
		done := make(chan error, 1)
		go func() {
			db, err := open(context.Background(), fifo)
			if err == nil {
				db.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("%s on a FIFO: %v, want it refused as no regular file", name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s on a FIFO still waits after 10 s", name)
		}
	}
}
