package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lastmile-app/lastmile/storage"
)

// backup writes a copy of the database to a new file, beside a running
// lastmile serve.
func backup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile backup", `Usage: lastmile backup [--database F] DEST

Copies the database to DEST, a new file (an existing one is refused, and so
is one beside a DEST-wal, -journal or -shm left by a deleted database), while
lastmile serve runs: SQLite's online backup, in one read of the database,
so the copy is the database as one commit left it, however busy serve is
(its writes go on meanwhile). The copy is one file, readable by its owner
only, checked (PRAGMA quick_check, a lastmile database) and synced to disk
before it is given its name: there is never part of a backup at DEST. It
needs free space for a whole copy in DEST's folder. Restore it with
lastmile restore, serve stopped.`, stderr)
	path := dbFlag(fs, getenv)
	if err := parseFlags(fs, interspersed(args, nil), stdout); err != nil {
		return err
	}
	if err := oneFile(fs, "DEST"); err != nil {
		return err
	}
	if err := checkDatabase(fs, *path); err != nil {
		return err
	}
	dest := fs.Arg(0)
	if err := storage.NotASideFile(dest); err != nil {
		return err
	}
	if _, err := os.Lstat(dest); err == nil {
		if fi, err := os.Stat(dest); err == nil && fi.IsDir() { // or a link to one
			return fmt.Errorf("%s is a folder: name the backup's new file in it, such as %s", dest, filepath.Join(dest, "lastmile-backup.db"))
		}
		return fmt.Errorf("%s exists: lastmile backup writes a new file (name another, or remove that one first)", dest)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if fi, err := os.Stat(filepath.Dir(dest)); err != nil || !fi.IsDir() {
		return fmt.Errorf("the folder of %s does not exist: create it first, or name a new file in a folder that does", dest)
	}
	if err := storage.NoSideFiles(dest); err != nil {
		return err
	}
	if _, err := os.Stat(*path); errors.Is(err, os.ErrNotExist) {
		if defaultPath(fs, getenv) {
			return fmt.Errorf("database %s: no such file (set LASTMILE_DATABASE or --database)", *path)
		}
		return fmt.Errorf("database %s: no such file", *path)
	}
	// Refused as by the commands that open it: the copy would miss a WAL
	// beside the file's other name.
	if err := storage.OneName(*path); err != nil {
		return err
	}
	c, err := storage.CopyDatabase(ctx, *path, dest)
	if err != nil {
		return err
	}
	defer c.Remove()
	if err := c.Place(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s backed up to %s: %s\n", *path, dest, describeCopy(c.Summary))
	strayCopies(stdout, dest)
	return nil
}

// restore replaces the database with a copy of a backup, serve stopped.
func restore(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile restore", `Usage: lastmile restore [--database F] BACKUP

Replaces the database with a copy of BACKUP (made by lastmile backup), with
lastmile serve stopped (restore refuses to run beside it). BACKUP is checked
first (PRAGMA quick_check, a lastmile database, not a newer lastmile's, not
the database itself): a backup refused changes nothing. The database is
not deleted: its -wal written into it (a WAL left beside the database would
otherwise be applied to the restored file and damage it), it is kept as
DATABASE.before-restore-TIME, and the copy takes the database's name in one
rename — a restore stopped midway leaves the database there, with both
names, which serve refuses until the before-restore one is removed. Then
start lastmile serve: see docs/operations.md, Backups, for Prometheus and
the deliveries GitHub sent since the backup.`, stderr)
	path := dbFlag(fs, getenv)
	if err := parseFlags(fs, interspersed(args, nil), stdout); err != nil {
		return err
	}
	if err := oneFile(fs, "BACKUP"); err != nil {
		return err
	}
	if err := checkDatabase(fs, *path); err != nil {
		return err
	}
	from := fs.Arg(0)
	// Refused as by the commands that open it, before the lock is made
	// beside it: the file's other name would still name the database
	// restore replaces, with any WAL beside that name.
	if err := storage.OneName(*path); err != nil {
		return err
	}
	// The database itself named as BACKUP (or a link to it) would be set
	// aside, then copied back: nothing restored, and the operator misled.
	if b, err := os.Stat(from); err == nil {
		if d, err := os.Stat(*path); err == nil && os.SameFile(b, d) {
			return fmt.Errorf("restore refused, nothing changed: BACKUP %s is the database itself (%s): name a copy made by lastmile backup", from, *path)
		}
	}
	unlock, err := lockDatabase(*path)
	if err != nil {
		return stopServeFirst(err, "restore")
	}
	// DB.lock goes as it came: one that restore made is removed, not left
	// to the user restore ran as (root, say: lastmile serve's user could
	// not open it).
	defer unlock(false)
	// The file itself, where SQLite keeps its -wal, as the lock finds it
	// (a link to a database not there yet: where SQLite will create it):
	// the link to it, if the path is one, stays as it is.
	db := lockPath(*path)
	replaced, err := os.Stat(db)
	switch {
	case errors.Is(err, os.ErrNotExist):
		replaced = nil // a first restore, on a new machine
	case err != nil:
		return err
	}
	c, err := storage.CopyDatabase(ctx, from, db)
	if err != nil {
		return fmt.Errorf("restore refused, nothing changed: %w", err)
	}
	defer c.Remove()
	at := time.Now().UTC()
	aside := db + ".before-restore-" + at.Format("20060102T150405Z")
	moved, err := c.Replace(ctx, aside)
	for n := 2; errors.Is(err, os.ErrExist) && len(moved) == 0 && n < 10; n++ { // a second restore within the second
		moved, err = c.Replace(ctx, fmt.Sprintf("%s.%d", aside, n))
	}
	if err != nil && len(moved) > 0 {
		for _, m := range moved {
			fmt.Fprintf(stderr, "lastmile restore: set aside: %s\n", m)
		}
		if fi, serr := os.Stat(db); serr == nil && replaced != nil && os.SameFile(fi, replaced) {
			// Stopped before the swap: the database is in place, with its
			// set-aside name as a second one, which serve refuses.
			return fmt.Errorf("%w: the database is not restored and is still in place; remove the names above (the first is a second name of the database, which serve refuses), then run lastmile restore again", err)
		}
		return fmt.Errorf("%w: the database is not restored, and the files above were set aside (rename them back, or run lastmile restore again)", err)
	}
	if err != nil {
		return err
	}

	fmt.Fprintf(stdout, "%s restored from %s: %s\n", *path, from, describeCopy(c.Summary))
	switch {
	case len(moved) == 0:
		fmt.Fprintf(stdout, "There was no database at %s: nothing was set aside.\n", db)
	case replaced == nil:
		fmt.Fprintf(stdout, "There was no database at %s, but files SQLite would have applied to the restored one, left by a database deleted without them; they are kept, renamed:\n", db)
		for _, m := range moved {
			fmt.Fprintf(stdout, "  %s\n", m)
		}
	default:
		fmt.Fprintln(stdout, "The database it replaced is kept, renamed (delete it once the restored one serves):")
		for _, m := range moved {
			fmt.Fprintf(stdout, "  %s\n", m)
		}
	}
	strayCopies(stdout, db)
	if note := restoredOwner(db, replaced); note != "" {
		fmt.Fprintln(stdout, note)
	}
	newest := "The backup holds no delivery"
	if t := c.Summary.NewestDelivery; !t.IsZero() {
		newest = "The backup's newest delivery was received " + when(t)
	}
	fmt.Fprintf(stdout, `Then start lastmile serve again, and:
  - Prometheus: lastmile's counters are back to the backup's totals, which
    Prometheus would count again as a reset. Delete lastmile's samples, the
    recorded lastmile:… ones with them, up to 10 minutes after serve starts
    again (after %s; docs/operations.md, Backups, says how).
  - %s. Of the deliveries since,
    those GitHub could not deliver (lastmile stopped or failing) are asked for
    again by serve's redelivery loop, within GitHub's redelivery window
    (LASTMILE_REDELIVERY_WINDOW: 72h on github.com, 168h on GitHub Enterprise
    Server); those delivered to the database this one replaces are not (GitHub
    lists them as delivered): their events, and the deployments made since,
    are not in the restored record. Redeliver those that matter from the App's
    settings (Advanced, Recent Deliveries).
`, at.Format(time.RFC3339), newest)
	return nil
}

// oneFile checks that a command was given one argument, a file named
// what: a usage error otherwise.
func oneFile(fs *flag.FlagSet, what string) error {
	switch {
	case fs.NArg() == 1 && fs.Arg(0) != "":
		return nil
	case fs.NArg() == 0:
		fmt.Fprintf(fs.Output(), "%s: missing %s\n", fs.Name(), what)
	case fs.Arg(0) == "":
		fmt.Fprintf(fs.Output(), "%s: an empty %s\n", fs.Name(), what)
	default:
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q after %s\n", fs.Name(), fs.Arg(1), what)
	}
	fs.Usage()
	return errUsage
}

// describeCopy is what a backup holds, for the operator to check.
func describeCopy(s storage.Summary) string {
	text := fmt.Sprintf("%s (%d pages of %d bytes, auto_vacuum %s), quick_check ok\n  %s",
		storage.Megabytes(s.Disk.Bytes()), s.Disk.PageCount, s.Disk.PageSize, s.Disk.AutoVacuum, count(s.Deliveries, "delivery", "deliveries"))
	if !s.NewestDelivery.IsZero() {
		text += ", the newest received " + when(s.NewestDelivery)
	}
	text += "; " + count(s.Releases, "release", "releases")
	if !s.NewestRelease.IsZero() {
		text += ", the newest recorded " + when(s.NewestRelease)
	}
	if s.Older {
		text += "; from an older lastmile: lastmile serve migrates it when it starts"
	}
	return text
}

// count is n things, one or many: 1 release, 2 releases, 0 releases.
func count(n int64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// restoredOwner gives the restored database at path the owner of the one
// it replaced when it can (run as root), and says what lastmile serve's
// user needs otherwise; "" when there is nothing to say.
func restoredOwner(path string, replaced os.FileInfo) string {
	now, err := os.Stat(path)
	if err != nil {
		return ""
	}
	uid, gid, ok := fileOwner(now)
	if !ok {
		return ""
	}
	if replaced == nil {
		if uid == 0 {
			return fmt.Sprintf("The restored database belongs to root: give it to lastmile's user (chown lastmile %s) before starting lastmile serve.", path)
		}
		return ""
	}
	wantUID, wantGID, _ := fileOwner(replaced)
	if uid == wantUID && gid == wantGID {
		return ""
	}
	if err := os.Chown(path, wantUID, wantGID); err != nil {
		return fmt.Sprintf("The restored database belongs to user %d, the one it replaced to user %d (%v): give it to lastmile's user (chown lastmile %s) before starting lastmile serve.", uid, wantUID, err, path)
	}
	return fmt.Sprintf("The restored database belongs to user %d, group %d, as the one it replaced.", wantUID, wantGID)
}

// strayCopies names the temporary copies an earlier backup or restore to
// dest left beside it (DEST.tmp-…, made before a copy is given its name):
// one that was killed, or stopped with the machine, removes nothing, and
// nothing else would tell of the space they hold.
func strayCopies(stdout io.Writer, dest string) {
	entries, err := os.ReadDir(filepath.Dir(dest))
	if err != nil {
		return
	}
	var stray []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), filepath.Base(dest)+".tmp-") || !e.Type().IsRegular() {
			continue
		}
		size := ""
		if fi, err := e.Info(); err == nil {
			size = " (" + storage.Megabytes(fi.Size()) + ")"
		}
		stray = append(stray, filepath.Join(filepath.Dir(dest), e.Name())+size)
	}
	if len(stray) == 0 {
		return
	}
	fmt.Fprintln(stdout, "Temporary copies an interrupted backup or restore left (remove them once no other runs):")
	for _, s := range stray {
		fmt.Fprintf(stdout, "  %s\n", s)
	}
}
