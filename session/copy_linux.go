package session

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// This file holds the copies between a session's child and its client:
// the child's output (pipes, or the terminal's master side) to the client,
// and the client's input to the child.
//
// A session that is open but quiet must cost little: most of a server's
// sessions wait most of the time. io.Copy would hold a 32 KiB buffer per
// direction for the whole session, 64-96 KiB of an idle session's memory
// (a pipe for stdout, one for stderr, one for stdin). These copies hold
// copyBufferSize only while data flows and give it back to a pool when the
// source has nothing more to say.

// copyBufferSize is the buffer a copy takes while data flows: io.Copy's,
// so bulk transfers move in the same steps.
const copyBufferSize = 32 << 10

// smallReadSize is the buffer a copy from the client reads into while it
// waits: the client's input arrives in a buffer of the SSH channel, so a
// read must have somewhere to go even when nothing is coming.
const smallReadSize = 512

// copyBuffers holds the copies' large buffers between bursts.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// copyBuffersOut counts the large buffers copies hold (tests).
var copyBuffersOut atomic.Int64

func getCopyBuffer() *[]byte {
	copyBuffersOut.Add(1)
	return copyBuffers.Get().(*[]byte)
}

func putCopyBuffer(b *[]byte) {
	copyBuffers.Put(b)
	copyBuffersOut.Add(-1)
}

// bulkBuffers holds the bulk step's buffers of copyTo between uploads.
var bulkBuffers = sync.Pool{New: func() any { b := make([]byte, bulkCopyBuffer); return &b }}

func getBulkBuffer() *[]byte {
	copyBuffersOut.Add(1)
	return bulkBuffers.Get().(*[]byte)
}

func putBulkBuffer(b *[]byte) {
	bulkBuffers.Put(b)
	copyBuffersOut.Add(-1)
}

// copyFromFile copies f to w until f ends (EOF, or an error such as EIO
// on a terminal whose slave side is gone) or a write to w fails; f's read
// deadline applies, and before (when not nil) is called ahead of every
// read. See readPooled for the buffers.
func copyFromFile(w io.Writer, f *os.File, before func()) (int64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var written int64
	for {
		if before != nil {
			before()
		}
		buf, n, err := readPooled(rc)
		if n > 0 {
			m, werr := w.Write((*buf)[:n])
			written += int64(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				putCopyBuffer(buf)
				return written, werr
			}
		}
		if buf != nil {
			putCopyBuffer(buf)
		}
		switch {
		case err != nil:
			return written, &os.PathError{Op: "read", Path: f.Name(), Err: err}
		case n == 0:
			return written, nil // EOF
		}
	}
}

// readPooled reads once from the file of rc into a pooled buffer, which
// the caller gives back with putCopyBuffer (nil when the read failed
// before it took one). It waits for the file to become readable holding
// no buffer: a buffer is taken for each attempt and given back at once
// when there is nothing to read. The file must be pollable (a pipe from
// os.Pipe, a non-blocking terminal master) for that: otherwise the read
// blocks holding a buffer, as io.Copy's would. n is 0 at EOF.
func readPooled(rc syscall.RawConn) (buf *[]byte, n int, err error) {
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		buf = getCopyBuffer()
		for {
			n, rerr = syscall.Read(int(fd), *buf)
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			putCopyBuffer(buf)
			buf = nil
			return false // wait until readable, without a buffer
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if n < 0 {
		n = 0
	}
	return buf, n, err
}

// copyToFile copies r to f until r ends (io.EOF: nil) or fails, or a write
// to f fails. While r has nothing to give it reads into a small buffer; a
// read that fills the buffer it was given makes the next read take a
// larger one (the pooled copyBufferSize, then bulkCopyBuffer), and a read
// that shows the stream has slowed gives it back (see copyTo).
func copyToFile(f *os.File, r io.Reader) (int64, error) { return copyTo(f, r, nil) }

// copyToPipe is copyToFile into a pipe, which it also grows to bulkPipeSize
// once the copy reaches bulkCopyBuffer (see pipecopy_linux.go).
func copyToPipe(f *os.File, r io.Reader) (int64, error) { return copyTo(f, r, f) }

// copyTo copies r to w in three steps of buffer: smallReadSize while the
// client is quiet or types, copyBufferSize once a read fills that, and
// bulkCopyBuffer once a read fills copyBufferSize (a bulk upload: every
// SSH packet already queued in one read and one write). A read shorter
// than its buffer steps back down to the small buffer from copyBufferSize,
// and from bulkCopyBuffer when it is shorter than copyBufferSize (less
// than one SSH packet was waiting: the upload has ended or slowed to a
// trickle), so a quiet session holds neither large buffer. pipe, when
// not nil, is grown to bulkPipeSize the first time the copy reaches the
// bulk step.
func copyTo(w io.Writer, r io.Reader, pipe *os.File) (int64, error) {
	small := make([]byte, smallReadSize)
	var big, bulk *[]byte
	defer func() {
		if big != nil {
			putCopyBuffer(big)
		}
		if bulk != nil {
			putBulkBuffer(bulk)
		}
	}()
	buf := small
	grown := false
	var written int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			written += int64(m)
			if werr != nil {
				return written, werr
			}
			if m != n {
				return written, io.ErrShortWrite
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return written, nil
			}
			return written, err
		}
		switch {
		case bulk != nil:
			if n < copyBufferSize {
				putBulkBuffer(bulk)
				bulk, buf = nil, small
			}
		case big != nil:
			if n == len(buf) {
				putCopyBuffer(big)
				big = nil
				bulk = getBulkBuffer()
				buf = *bulk
				if pipe != nil && !grown {
					growPipe(pipe)
					grown = true
				}
			} else {
				putCopyBuffer(big)
				big, buf = nil, small
			}
		case n == len(buf):
			big = getCopyBuffer()
			buf = *big
		}
	}
}
