package session

import (
	"os"

	"golang.org/x/sys/unix"
)

// The copy of the client's stdin into a session's pipe (without a PTY,
// copyToPipe in copy_linux.go) grows once reads fill its buffer, that is,
// once the stream is a bulk upload: an interactive session keeps small
// buffers and the kernel's default pipe; an upload takes every SSH packet already queued
// (up to bulkCopyBuffer) in one read and one write, so one system call and
// one wake-up of the command per that much rather than per 32 KiB packet,
// into a pipe grown to bulkPipeSize. Measured on a tailnet (BenchmarkTailnetBulk,
// bench/RESULTS.md): the server's CPU per GiB uploaded down by about a
// fifth. The command's output is copied as before (outputCopy): the same
// growth there showed no clear gain in CPU per GiB downloaded.
const (
	bulkCopyBuffer = 256 << 10
	// bulkPipeSize is what a bulk stream's pipe is grown to (F_SETPIPE_SZ;
	// at most /proc/sys/fs/pipe-max-size, 1 MiB by default, for a server
	// that is not root). Growing is best effort: refused (the server user's
	// pipe-user-pages limits), the pipe stays as it was.
	bulkPipeSize = 256 << 10
)

// growPipe asks the kernel for a bulkPipeSize buffer on pipe, ignoring a
// refusal.
func growPipe(pipe *os.File) {
	rc, err := pipe.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, bulkPipeSize)
	})
}
