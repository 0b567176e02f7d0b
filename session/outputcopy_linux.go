package session

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// outputCopy copies the child's output (one of its pipes, or the
// terminal's master side) to the client with a goroutine only while the
// session is in use: the goroutine waits on the runtime's poller for more
// output, as io.Copy would, but once the file has been quiet for
// holdQuiet it arms a watch (whenReadable) and ends; the next output, or
// the file's end, starts another. A quiet session thus holds no goroutine
// for its output, and one in use (typing, a bulk copy) keeps the poller's
// direct wake-up. Closing the outputCopy (the session's end, or a pipe's
// copy that can no longer deliver) closes the file and ends the copy.
type outputCopy struct {
	f   *os.File // non-blocking: a pipe from os.Pipe, or a terminal's master side
	rc  syscall.RawConn
	w   io.Writer
	end func() // called once, when the copy is over
	// pipe: a failed write closes f, so that the child's next write gets
	// EPIPE or SIGPIPE instead of blocking once the pipe is full. A
	// terminal stays open until the session's end: closing its master
	// side would hang up the session and free its number for another
	// login while this session's processes still use it.
	pipe bool

	mu     sync.Mutex
	cancel func() bool // the armed watch; nil while a goroutine copies
	closed bool
	ended  sync.Once
	// After endWhenQuiet: the copy ends once the file has been silent
	// for drain (a terminal that a background job holds open).
	drain    time.Duration
	lastData time.Time
	quiet    *time.Timer
}

// holdQuiet is how long a copy's goroutine waits for more output before
// it leaves the wait to the watcher. Handing over costs a few system calls
// and a goroutine hop on the next output (measured: about 0.2 ms more
// per keystroke echo when every echo paid it), so only a session quiet
// for a while pays it, once.
const holdQuiet = time.Second

// startOutputCopy starts copying f, a pipe or (pipe false) a terminal's
// master side, to w; end is called once the copy is over (f's end or a
// read error such as a terminal's EIO, a failed write, or Close).
func startOutputCopy(f *os.File, pipe bool, w io.Writer, end func()) (*outputCopy, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &outputCopy{f: f, rc: rc, w: w, end: end, pipe: pipe}
	go c.copy()
	return c, nil
}

// copy copies until the file has been quiet for holdQuiet, then watches
// it for more.
func (c *outputCopy) copy() {
	for {
		c.mu.Lock()
		deadline := time.Now().Add(holdQuiet)
		if end := c.lastData.Add(c.drain); c.drain > 0 && end.Before(deadline) {
			deadline = end
		}
		_ = c.f.SetReadDeadline(deadline)
		c.mu.Unlock()
		buf, n, err := readPooled(c.rc)
		if n > 0 {
			m, werr := c.w.Write((*buf)[:n])
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			putCopyBuffer(buf)
			if werr != nil {
				// Output can no longer be delivered (the client closed
				// its stdout, or the channel went away).
				if c.pipe {
					c.Close()
				}
				c.finish()
				return
			}
			c.mu.Lock()
			c.lastData = time.Now() // a drain counts from here, as a read deadline set now would
			c.mu.Unlock()
			continue
		}
		if buf != nil {
			putCopyBuffer(buf)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.watch() // quiet for holdQuiet, or drained
			return
		}
		c.finish() // EOF, or the read failed (os.ErrClosed: Close)
		return
	}
}

// watch arms the watch that starts the next copy; a closed copy ends, as
// does a draining one silent for its drain.
func (c *outputCopy) watch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		c.finish()
		return
	}
	if c.drain > 0 {
		left := c.drain - time.Since(c.lastData)
		if left <= 0 {
			c.finish()
			return
		}
		c.stopQuiet()
		c.quiet = time.AfterFunc(left, c.quietEnough)
	}
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		c.cancel, err = whenReadable(int(fd), func() {
			c.mu.Lock()
			c.cancel = nil
			if c.drain > 0 {
				// Something came within the drain: the new goroutine
				// reads it even if it starts after the drain's end.
				c.lastData = time.Now()
			}
			c.mu.Unlock()
			go c.copy()
		})
	})
	switch {
	case cerr != nil: // closed
		c.finish()
	case err != nil:
		// No watcher: wait on the runtime's poller for as long as it
		// takes, as a plain copy (endWhenQuiet sets its deadline).
		c.stopQuiet()
		_ = c.f.SetReadDeadline(time.Time{})
		if c.drain > 0 {
			_ = c.f.SetReadDeadline(c.lastData.Add(c.drain))
		}
		go func() {
			_, err := copyFromFile(c.w, c.f, func() {
				c.mu.Lock()
				if c.drain > 0 {
					_ = c.f.SetReadDeadline(time.Now().Add(c.drain))
				}
				c.mu.Unlock()
			})
			if err != nil && c.pipe {
				c.Close() // as copy does after a failed write
			}
			c.finish()
		}()
	}
}

// endWhenQuiet makes the copy end once the file has been silent for d,
// from now on; the file stays open.
func (c *outputCopy) endWhenQuiet(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drain, c.lastData = d, time.Now()
	if c.cancel != nil {
		c.stopQuiet()
		c.quiet = time.AfterFunc(d, c.quietEnough)
		return
	}
	// A goroutine copies: it waits on the poller until this deadline at
	// most, and sets the next itself.
	_ = c.f.SetReadDeadline(c.lastData.Add(d))
}

// quietEnough ends a draining copy that waits on the watcher and has been
// silent for its drain.
func (c *outputCopy) quietEnough() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel == nil || time.Since(c.lastData) < c.drain {
		return // a goroutine copies; it looks again when it next waits
	}
	// Cancelled under mu, so that Close cannot close the file (and free
	// its number) between the two.
	if c.cancel() {
		c.finish()
	}
	c.cancel = nil
}

func (c *outputCopy) stopQuiet() {
	if c.quiet != nil {
		c.quiet.Stop()
		c.quiet = nil
	}
}

func (c *outputCopy) finish() { c.ended.Do(c.end) }

// Close closes the file and ends the copy.
func (c *outputCopy) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.cancel != nil && c.cancel() {
		c.finish() // it was waiting on the watcher: no goroutine copies any more
	}
	c.cancel = nil
	c.stopQuiet()
	c.mu.Unlock()
	return c.f.Close()
}
