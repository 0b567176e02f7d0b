package session

import (
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// outputCopy copies the child's output (one of its pipes, or the
// terminal's master side) to the client with a goroutine only while there
// is something to say: when a read finds nothing, the copy watches the
// file (whenReadable) and its goroutine ends; the next output, or the
// file's end, starts another. A quiet session thus holds no goroutine for
// its output. Closing the outputCopy (the session's end, or a copy that
// can no longer deliver) closes the file and ends the copy.
type outputCopy struct {
	f   *os.File // non-blocking: a pipe from os.Pipe, or a terminal's master side
	rc  syscall.RawConn
	w   io.Writer
	end func() // called once, when the copy is over

	mu     sync.Mutex
	cancel func() bool // the armed watch; nil while a burst runs
	closed bool
	ended  sync.Once
	// After endWhenQuiet: the copy ends once the file has been silent
	// for drain (a terminal that a background job holds open).
	drain    time.Duration
	lastData time.Time
	quiet    *time.Timer
}

// startOutputCopy starts copying f to w; end is called once the copy is
// over (f's end, a failed write, or Close).
func startOutputCopy(f *os.File, w io.Writer, end func()) (*outputCopy, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &outputCopy{f: f, rc: rc, w: w, end: end}
	go c.burst()
	return c, nil
}

// burst copies what the pipe holds, then watches it for more.
func (c *outputCopy) burst() {
	for {
		buf, n, empty, err := readReady(c.rc)
		if empty {
			c.watch()
			return
		}
		if n > 0 {
			c.mu.Lock()
			if c.drain > 0 {
				c.lastData = time.Now()
			}
			c.mu.Unlock()
			m, werr := c.w.Write((*buf)[:n])
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			putCopyBuffer(buf)
			if werr != nil {
				// Output can no longer be delivered (the client closed
				// its stdout, or the channel went away): close the pipe,
				// so the child's next write gets EPIPE or SIGPIPE
				// instead of blocking once the pipe is full.
				c.Close()
				c.finish()
				return
			}
			continue
		}
		if buf != nil {
			putCopyBuffer(buf)
		}
		if err != nil {
			c.Close() // as after a failed write; os.ErrClosed: closed already
		}
		c.finish() // EOF, or the read failed
		return
	}
}

// watch arms the watch that starts the next burst; a closed copy ends, as
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
			c.mu.Unlock()
			go c.burst()
		})
	})
	switch {
	case cerr != nil: // closed
		c.finish()
	case err != nil:
		// No watcher: wait on the runtime's poller, as a plain copy.
		c.stopQuiet()
		go func() {
			_, _ = copyFromFileEach(c.w, c.f, func() {
				c.mu.Lock()
				drain := c.drain
				c.mu.Unlock()
				if drain > 0 {
					_ = c.f.SetReadDeadline(time.Now().Add(drain))
				}
			})
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
	}
	// A burst under way looks at the drain when it next waits.
}

// quietEnough ends a draining copy that waits and has been silent for its
// drain.
func (c *outputCopy) quietEnough() {
	c.mu.Lock()
	cancel := c.cancel
	if cancel == nil || time.Since(c.lastData) < c.drain {
		c.mu.Unlock()
		return // a burst runs; it looks again when it next waits
	}
	c.cancel = nil
	c.mu.Unlock()
	if cancel() {
		c.finish()
	}
}

func (c *outputCopy) stopQuiet() {
	if c.quiet != nil {
		c.quiet.Stop()
		c.quiet = nil
	}
}

func (c *outputCopy) finish() { c.ended.Do(c.end) }

// Close closes the pipe and ends the copy.
func (c *outputCopy) Close() error {
	c.mu.Lock()
	c.closed = true
	cancel := c.cancel
	c.cancel = nil
	c.stopQuiet()
	c.mu.Unlock()
	if cancel != nil && cancel() {
		c.finish() // it was waiting: no burst runs any more
	}
	return c.f.Close()
}

// readReady reads once from the file of rc into a pooled buffer, which the
// caller gives back with putCopyBuffer (nil when the read took none),
// without waiting: empty when there is nothing to read yet. n is 0 at EOF
// and when the read failed (err; a closed file's is os.ErrClosed).
func readReady(rc syscall.RawConn) (buf *[]byte, n int, empty bool, err error) {
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
			buf, empty = nil, true
		}
		return true
	})
	if err == nil && !empty {
		err = rerr
	}
	if n < 0 {
		n = 0
	}
	return buf, n, empty, err
}
