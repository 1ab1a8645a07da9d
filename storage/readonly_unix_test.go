//go:build unix

package storage_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/lastmile-app/lastmile/storage"
)

// readOnlyChild is the variable that makes the test binary, run again as
// another user, open the database it names and print what Open and
// OpenExisting said.
const readOnlyChild = "LASTMILE_TEST_READONLY_DATABASE"

func TestMain(m *testing.M) {
	if path := os.Getenv(readOnlyChild); path != "" {
		ctx := context.Background()
		for name, open := range map[string]func(context.Context, string) (*storage.DB, error){"Open": storage.Open, "OpenExisting": storage.OpenExisting} {
			db, err := open(ctx, path)
			if err == nil && name == "OpenExisting" {
				_, err = db.Vacuum(ctx)
			}
			if db != nil {
				db.Close()
			}
			fmt.Printf("%s: %v\n", name, err)
		}
		db, err := storage.OpenReadOnly(ctx, filepath.Join(filepath.Dir(path), "private.db"))
		if db != nil {
			db.Close()
		}
		fmt.Printf("OpenReadOnly: %v\n", err)
		db, err = storage.Open(ctx, filepath.Join(filepath.Dir(path), "folder", "lastmile.db"))
		if db != nil {
			db.Close()
		}
		fmt.Printf("Open in a folder: %v\n", err)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A database file lastmile's user may not write is refused when it is
// opened, saying so (SQLite opens it read-only, and said nothing before the
// first write: serve reported ready, then answered every delivery 503); a
// write to one opened anyway (a retry) names the file and what to check.
// Root writes any file: as root, the test runs the check as nobody.
func TestOpenRefusesADatabaseItCannotWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lastmile.db")
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(dir, "private.db")
	if db, err = storage.Open(context.Background(), private); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0); err != nil {
		t.Fatal(err)
	}
	// A database file its user may write, in a folder where it may not
	// create the -wal and -shm files (nor DB.lock: serve's message is
	// app's).
	folder := filepath.Join(dir, "folder")
	if err := os.Mkdir(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	inFolder := filepath.Join(folder, "lastmile.db")
	if db, err = storage.Open(context.Background(), inFolder); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(inFolder, 0o666); err != nil {
		t.Fatal(err)
	}
	var out []byte
	if os.Geteuid() != 0 {
		if err := os.Chmod(folder, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(folder, 0o755) })
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), readOnlyChild+"="+path)
		out, err = cmd.CombinedOutput()
	} else {
		// The test binary and the database where nobody may read them,
		// the database in a folder nobody may write in too (its -wal and -shm
		// files), the file alone read-only, as the user found it.
		bin := filepath.Join(dir, "storage.test")
		copyFile(t, os.Args[0], bin, 0o755)
		for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin)
		cmd.Env = []string{readOnlyChild + "=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err = cmd.CombinedOutput()
	}
	if err != nil {
		t.Fatalf("the child: %v\n%s", err, out)
	}
	// A database the user may not read: said so (SQLite said "unable to
	// open database file"), with what to do.
	if want := "OpenReadOnly: database " + private + ": permission denied: run the command as the user lastmile serve runs as"; !strings.Contains(string(out), want) {
		t.Errorf("OpenReadOnly of a database its user may not read: want %q in\n%s", want, out)
	}
	if want := "Open in a folder: database " + inFolder + " cannot be written: lastmile's user must be able to write the file, its -wal and -shm files beside it, and their folder"; !strings.Contains(string(out), want) {
		t.Errorf("Open of a database in a folder its user may not write: want %q in\n%s", want, out)
	}
	for _, name := range []string{"Open", "OpenExisting"} {
		want := name + ": database " + path + " cannot be written: lastmile's user must be able to write the file"
		if name == "OpenExisting" {
			want = name + ": database " + path + " cannot be written: lastmile's user must be able to write the file, its -wal and -shm files beside it, and their folder (PRAGMA incremental_vacuum"
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("%s of a database its user may not write: want %q in\n%s", name, want, out)
		}
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
