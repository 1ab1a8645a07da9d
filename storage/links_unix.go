//go:build unix

package storage

import (
	"os"
	"syscall"
)

// names counts the names (hard links) a file has.
func names(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
