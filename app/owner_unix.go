//go:build unix

package app

import (
	"os"
	"syscall"
)

// fileOwner is the user and group that own a file.
func fileOwner(fi os.FileInfo) (uid, gid int, ok bool) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid), true
	}
	return 0, 0, false
}
