package recorder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
)

// queue takes a stream's event lines from the session and sends them, as
// many lines a data frame as have come (at most queueLimit and one line), from its own
// goroutine: the session does not wait for the recorder's conn, only for
// room in the queue (at most the stream's bound; then the recording has
// failed). A line given to the queue is the recording's: if it cannot be
// sent, or the recorder does not acknowledge it in time, the stream fails
// and the session follows its rule.
type queue struct {
	s *stream

	mu      sync.Mutex
	pending []byte // frame header room, then the lines not yet taken
	spare   []byte // the sender's last frame, for reuse
	err     error  // the first send error; the queue takes no more
	closed  bool   // drain was called: the sender sends what is left and stops

	wake chan struct{} // there are lines (or the queue closed)
	room chan struct{} // the sender took the pending lines
	done chan struct{} // the sender stopped
}

const frameHeader = 5 // type byte and payload length

// queueLimit is how many bytes of lines a stream holds before the session
// waits. A frame is at most queueLimit and one line: under MaxFrame, as an
// event line is at most about 6 x asciicast.MaxEventData (384 KiB).
const queueLimit = 256 << 10

func newQueue(s *stream) *queue {
	return &queue{s: s, pending: make([]byte, frameHeader, 64<<10), spare: make([]byte, frameHeader, 64<<10),
		wake: make(chan struct{}, 1), room: make(chan struct{}, 1), done: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// AppendLine appends one event line to the queue in place (the
// asciicast writer's line is never copied), waiting at most the stream's
// bound for room: the queue takes a line while it holds less than
// queueLimit, so a frame is at most queueLimit plus one line.
func (q *queue) AppendLine(line func([]byte) []byte) error {
	var timer *time.Timer
	for {
		q.mu.Lock()
		switch {
		case q.err != nil:
			err := q.err
			q.mu.Unlock()
			return err
		case q.closed:
			q.mu.Unlock()
			return errors.New("recorder: the stream is closed")
		case len(q.pending)-frameHeader < queueLimit:
			before := len(q.pending)
			q.pending = line(q.pending)
			if n := len(q.pending) - frameHeader; n > MaxFrame {
				q.pending = q.pending[:before]
				q.mu.Unlock()
				return fmt.Errorf("recorder: an event line of %d bytes, over the frame limit", n-(before-frameHeader))
			}
			q.mu.Unlock()
			signal(q.wake)
			return nil
		}
		q.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(q.s.bound)
			defer timer.Stop()
		}
		select {
		case <-q.room:
		case <-q.done:
		case <-timer.C:
			return q.s.failWith(fmt.Errorf("recorder %s: took no data for %s", q.s.target.Name, q.s.bound))
		}
	}
}

// Write queues whole event lines (for an io.Writer's callers; the
// asciicast writer uses AppendLine).
func (q *queue) Write(p []byte) (int, error) {
	if err := q.AppendLine(func(buf []byte) []byte { return append(buf, p...) }); err != nil {
		return 0, err
	}
	return len(p), nil
}

// send writes the queued lines as data frames until drain.
func (q *queue) send() {
	defer close(q.done)
	defer signal(q.room)
	for {
		<-q.wake
		q.mu.Lock()
		frame, closed := q.pending, q.closed
		q.pending = q.spare[:frameHeader]
		q.mu.Unlock()
		signal(q.room)
		if len(frame) > frameHeader {
			err := q.s.dataFrame(frame)
			q.mu.Lock()
			if err != nil && q.err == nil {
				q.err = err
			}
			q.spare = frame
			q.mu.Unlock()
			if err != nil {
				return
			}
		} else {
			q.mu.Lock()
			q.spare = frame
			q.mu.Unlock()
		}
		if closed {
			return
		}
	}
}

// drain sends what is queued and stops the sender; it returns the send
// error, if any.
func (q *queue) drain() error {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.wake)
	<-q.done
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// dataFrame writes frame (header room, then the payload) as one data
// frame, with one write.
func (s *stream) dataFrame(frame []byte) error {
	n := len(frame) - frameHeader
	frame[0] = frameData
	binary.BigEndian.PutUint32(frame[1:frameHeader], uint32(n))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.sent.Add(int64(n)) // before the write: an acknowledgement may come back first
	s.conn.SetWriteDeadline(time.Now().Add(s.bound))
	if _, err := s.conn.Write(frame); err != nil {
		return s.failWith(fmt.Errorf("recorder %s: %w", s.target.Name, err))
	}
	return nil
}
