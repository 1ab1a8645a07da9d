//go:build unix

package app

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
	want := "lastmile's user must be able to write the database's folder, where serve keeps lastmile.db.lock and SQLite the database's -wal and -shm files (chown it to that user)"
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "permission denied") {
		t.Errorf("want %q in\n%s", want, out)
	}
	if entries, _ := os.ReadDir(folder); len(entries) != 0 {
		t.Errorf("%d files left in the folder", len(entries))
	}
}
