//go:build unix

package app

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/lastmile-app/lastmile/storage"
)

// A database folder that serve's user may not write (chown forgotten) stops
// it at start, saying what to do: it could create neither DB.lock nor the
// -wal and -shm files. As root, which writes anywhere, serve runs as nobody.
func TestServeSaysItsFolderMustBeWritable(t *testing.T) {
	bin := lastmileBinary(t)
	dir := t.TempDir()
	folder := filepath.Join(dir, "var-lib-lastmile")
	if err := os.Mkdir(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(folder, "lastmile.db")
	cmd := exec.Command(bin, "serve")
	key := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(newKey(t))})
	cmd.Env = []string{"LASTMILE_LISTEN=127.0.0.1:0", "LASTMILE_DATABASE=" + db, "LASTMILE_WEBHOOK_SECRET=s3cret-s3cret",
		"LASTMILE_APP_ID=7", "LASTMILE_PRIVATE_KEY=" + string(key), "LASTMILE_GITHUB_URL=http://127.0.0.1:1/", "LASTMILE_REDELIVERY_INTERVAL=0"}
	if os.Geteuid() == 0 {
		// nobody may run the binary and reach the folder, not write in it.
		for _, d := range []string{filepath.Dir(bin), dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		if err := os.Chmod(folder, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(folder, 0o755) })
	}
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d (%v), want 1:\n%s", code, err, out)
	}
	want := "lastmile's user must be able to write the database's folder, where serve keeps lastmile.db.lock and SQLite the database's -wal and -shm files, and the files in it (chown -R the folder to that user: those a run as another user left there are that user's)"
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "permission denied") {
		t.Errorf("want %q in\n%s", want, out)
	}
	if entries, _ := os.ReadDir(folder); len(entries) != 0 {
		t.Errorf("%d files left in the folder", len(entries))
	}
}

// A user who may read the database but not write its folder (an operator
// other than serve's user) cannot have SQLite make the -shm file it reads
// a WAL database through; one who may not read the -shm file there (left
// by serve, which has the database open, readable by its user only)
// cannot read the database either. history and backup both say so, in
// the same words, where SQLite says "attempt to write a readonly database"
// or "unable to open database file". As root, which reads and writes
// anywhere, they run as nobody.
func TestReadersExplainTheSideFilesTheyCannotUse(t *testing.T) {
	bin := lastmileBinary(t)
	dir := t.TempDir()
	folder := filepath.Join(dir, "var-lib-lastmile")
	if err := os.Mkdir(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(folder, "lastmile.db")
	acceptDeliveries(t, db, "d", 2)
	if err := os.Chmod(db, 0o644); err != nil {
		t.Fatal(err)
	}
	backups := filepath.Join(dir, "backups")
	if err := os.Mkdir(backups, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(backups, 0o777); err != nil { // whatever the umask
		t.Fatal(err)
	}
	// Root's files, that nobody may read; for another user, its own, that
	// it may not.
	root := os.Geteuid() == 0
	private := os.FileMode(0o600)
	if root {
		for _, d := range []string{filepath.Dir(bin), dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		private = 0
		if err := os.Chmod(folder, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(folder, 0o755) })
	}
	asReader := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = []string{"LASTMILE_DATABASE=" + db}
		if root {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("%q: exit %d (%v), want 1:\n%s", args, code, err, out)
		}
		return string(out)
	}

	want := "cannot read it: SQLite reads a WAL database through its -shm file, which it cannot create in the database's folder (attempt to write a readonly database (1544)): run as a user who can write there, or while lastmile serve has the database open"
	for _, args := range [][]string{{"history"}, {"backup", filepath.Join(backups, "a.db")}} {
		if out := asReader(args...); !strings.Contains(out, "lastmile: database "+db+": "+want) {
			t.Errorf("%q: want %q in\n%s", args, want, out)
		}
	}

	// serve has the database open: its -shm and -wal files are there,
	// readable by serve's user only.
	if err := os.Chmod(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	open, err := storage.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	for _, f := range []string{db + "-shm", db + "-wal"} {
		if err := os.Chmod(f, private); err != nil {
			t.Fatal(err)
		}
	}
	want = "cannot read it: SQLite reads a WAL database through its -shm file, " + db + "-shm, which this user may not read (permission denied): run the command as the user lastmile serve runs as (sudo -u USER …), or with read access to the -shm file"
	for _, args := range [][]string{{"history"}, {"backup", filepath.Join(backups, "b.db")}} {
		if out := asReader(args...); !strings.Contains(out, "lastmile: database "+db+": "+want) {
			t.Errorf("%q: want %q in\n%s", args, want, out)
		}
	}
	// The -shm file readable, the -wal file not.
	if err := os.Chmod(db+"-shm", 0o644); err != nil {
		t.Fatal(err)
	}
	want = "cannot read it: SQLite reads a WAL database with the commits in its -wal file, " + db + "-wal, which this user may not read (permission denied): run the command as the user lastmile serve runs as (sudo -u USER …), or with read access to the -wal file"
	for _, args := range [][]string{{"history"}, {"backup", filepath.Join(backups, "c.db")}} {
		if out := asReader(args...); !strings.Contains(out, "lastmile: database "+db+": "+want) {
			t.Errorf("%q: want %q in\n%s", args, want, out)
		}
	}
	if entries, _ := os.ReadDir(backups); len(entries) != 0 {
		t.Errorf("%d files left in the backups' folder", len(entries))
	}
}

// A database in a folder its user may not enter is refused as one it may
// not read, saying what to do, not as one that is not there (with the
// hint to set LASTMILE_DATABASE, which names it already). As root, the
// commands run as nobody.
func TestADatabaseInAFolderItsUserMayNotEnter(t *testing.T) {
	bin := lastmileBinary(t)
	dir := t.TempDir()
	folder := filepath.Join(dir, "var-lib-lastmile")
	if err := os.Mkdir(folder, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(folder, "lastmile.db")
	acceptDeliveries(t, db, "d", 1)
	backups := filepath.Join(dir, "backups")
	if err := os.Mkdir(backups, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(backups, 0o777); err != nil {
		t.Fatal(err)
	}
	root := os.Geteuid() == 0
	if root {
		for _, d := range []string{filepath.Dir(bin), dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(folder, 0o700); err != nil {
			t.Fatal(err)
		}
	} else {
		if err := os.Chmod(folder, 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(folder, 0o755) })
	}
	advice := ": permission denied: run the command as the user lastmile serve runs as (sudo -u USER …), or with read access to the file and its folder\n"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"history", "--database", db}, "lastmile: database " + db + advice},
		{[]string{"deliveries"}, "lastmile: database " + db + advice},
		{[]string{"backup", filepath.Join(backups, "a.db")}, "lastmile: " + db + advice},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = []string{"LASTMILE_DATABASE=" + db}
		if root {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || string(out) != tc.want {
			t.Errorf("%q: exit %d (%v), output %q; want 1 and %q", tc.args, code, err, out, tc.want)
		}
	}
}
