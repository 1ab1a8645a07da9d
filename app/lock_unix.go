//go:build unix

package app

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// lockDatabase makes sure one lastmile serve works on a database: two
// workers on one inbox would handle deliveries twice. The lock is an flock
// on DB.lock beside the database, released when the process ends, however
// it ends. The read commands (history, audit, deliveries) take no lock.
//
// The lock is the database file's, whatever path names it: beside the file
// a symbolic link (to it, or to a folder on its path) points at, where
// SQLite opens it, so that a second serve given the link finds it taken.
//
// release(false), for a database that could not be opened, also removes
// DB.lock if this call created it: a refused start leaves nothing behind.
// It is removed while still locked, and a lock taken on a DB.lock that is
// no longer at its path (removed so by another process) is taken again.
func lockDatabase(path string) (release func(keep bool), err error) {
	lock := lockPath(path) + ".lock"
	for range 10 {
		_, statErr := os.Lstat(lock)
		created := errors.Is(statErr, fs.ErrNotExist)
		f, err := os.OpenFile(lock, os.O_CREATE|os.O_RDWR, 0o600)
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("lock database: %w: lastmile's user must be able to write the database's folder, where serve keeps %s and SQLite the database's -wal and -shm files, and the files in it (chown -R the folder to that user: those a run as another user left there are that user's)", err, filepath.Base(lock))
		}
		if err != nil {
			return nil, fmt.Errorf("lock database: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, &inUseError{path: path, lock: lock}
			}
			return nil, fmt.Errorf("lock database: %w", err)
		}
		held, err1 := f.Stat()
		there, err2 := os.Stat(lock)
		if err1 != nil || err2 != nil || !os.SameFile(held, there) {
			f.Close() // removed meanwhile: lock the one there now
			continue
		}
		return func(keep bool) {
			if !keep && created {
				os.Remove(lock)
			}
			f.Close()
		}, nil
	}
	return nil, fmt.Errorf("lock database: %s keeps being replaced", lock)
}
