//go:build unix

package sshmesh_test

import (
	"os"
	"syscall"
)

// fileUID is the owner of the file fi describes.
func fileUID(fi os.FileInfo) uint32 { return fi.Sys().(*syscall.Stat_t).Uid }
