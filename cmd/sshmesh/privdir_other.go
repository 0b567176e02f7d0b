//go:build !unix

package main

import (
	"errors"
	"io/fs"
)

// checkPrivateDir reports why fi (from Lstat) is not a directory of this
// user's; elsewhere than Unix it relies on the directory's location.
func checkPrivateDir(fi fs.FileInfo) error {
	if !fi.IsDir() {
		return errors.New("not a directory")
	}
	return nil
}
