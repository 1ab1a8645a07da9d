package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"
)

// An upgrade logs each migration it applies, before (some take minutes on
// a large database) and after, with how long it took; a new database's
// migrations are not news.
func TestOpenLoggedSaysWhichMigrationsRun(t *testing.T) {
	ctx := context.Background()
	files, err := migrationFiles()
	if err != nil {
		t.Fatal(err)
	}
	last := files[len(files)-1]
	before := files[len(files)-3].version // the two newest to apply
	type line struct {
		Msg, Migration, Took string
	}
	open := func(path string) []line {
		t.Helper()
		var out bytes.Buffer
		db, err := OpenLogged(ctx, path, slog.New(slog.NewJSONHandler(&out, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		var lines []line
		for dec := json.NewDecoder(&out); dec.More(); {
			var l line
			if err := dec.Decode(&l); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, l)
		}
		return lines
	}
	if got := open(filepath.Join(t.TempDir(), "new.db")); len(got) != 0 {
		t.Errorf("a new database logged %+v", got)
	}
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := openUpTo(ctx, path, before)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	got := open(path)
	want := []string{files[len(files)-2].base, files[len(files)-2].base, last.base, last.base}
	if len(got) != len(want) {
		t.Fatalf("logged %+v, want a line before and after %s and %s", got, want[0], want[2])
	}
	for i, l := range got {
		applying := i%2 == 0
		if l.Migration != want[i] || applying != (l.Msg != "database migration: applied") || applying == (l.Took != "") {
			t.Errorf("line %d: %+v", i, l)
		}
	}
	if again := open(path); len(again) != 0 {
		t.Errorf("an up-to-date database logged %+v", again)
	}
}
