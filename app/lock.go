package app

import (
	"fmt"
	"os"
	"path/filepath"
)

// inUseError is lockDatabase's refusal of a database that another lastmile
// serve holds.
type inUseError struct{ path, lock string }

func (e *inUseError) Error() string {
	return fmt.Sprintf("another lastmile serve is using %s (it holds %s): run one per database", e.path, e.lock)
}

// stopServeFirst is err, lockDatabase's, with what the command needs
// when another lastmile serve holds the database.
func stopServeFirst(err error, command string) error {
	if _, ok := err.(*inUseError); ok {
		return fmt.Errorf("%w; stop it before lastmile %s", err, command)
	}
	return err
}

// lockPath is the database file's own path: path with its symbolic links
// resolved — followed one by one, so that a link to a database not created
// yet (SQLite creates it through the link) names where it will be — and
// its folder's.
func lockPath(path string) string {
	for range 40 { // as the kernel, a bound on links followed
		target, err := os.Readlink(path)
		if err != nil {
			break // not a link (or nothing there yet)
		}
		if !filepath.IsAbs(target) {
			// Relative to the link's folder as the kernel finds it: that
			// folder's own links resolved first, so that a ".." in the
			// target goes up from where the folder really is.
			dir := filepath.Dir(path)
			if real, err := filepath.EvalSymlinks(dir); err == nil {
				dir = real
			}
			target = filepath.Join(dir, target)
		}
		path = target
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		return filepath.Join(dir, filepath.Base(path))
	}
	return path
}
