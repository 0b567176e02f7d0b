//go:build !unix

package sshmesh_test

import "os"

// fileUID is the owner of the file fi describes; files have no numeric
// owner here, so it is never a real user's (the tests that read it need
// root on a Unix host and skip elsewhere).
func fileUID(fi os.FileInfo) uint32 { return ^uint32(0) }
