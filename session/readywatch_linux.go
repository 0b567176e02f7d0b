package session

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A session that is open but quiet should hold no goroutine of this
// package: a parked goroutine is a stack of 4-8 KiB, and most of a
// server's sessions wait most of the time. What a quiet session waits for
// is a descriptor becoming readable: its child's output pipes, and its
// child's pidfd (readable from the child's exit on). Go's runtime can
// wait for a descriptor only with a goroutine parked on it, so the
// process has one watcher of its own: an epoll instance, itself on the
// runtime's poller, on which one goroutine waits for every watched
// descriptor, and only while something is watched. A watch is one-shot:
// once its descriptor is ready its function runs and the watch is gone.

// readyWatcher is the process's watcher.
type readyWatcher struct {
	mu      sync.Mutex
	ep      *os.File        // the epoll instance: non-blocking, on the runtime's poller
	rc      syscall.RawConn // ep's
	epfd    int             // ep's descriptor (ep.Fd would make it blocking); never closed
	next    uint32
	watches map[uint32]watch
	running bool // the goroutine waits on ep
}

type watch struct {
	fd int
	fn func()
}

var watcher readyWatcher

// watchRefused, when set (tests), is whenReadable's error: sessions then
// wait as they would without a watcher.
var watchRefused error

// whenReadable runs fn once fd is readable, has hung up or is in error,
// on the watcher's goroutine: fn must not block (it may start a goroutine,
// or watch again). cancel disarms the watch and reports whether that
// happened before fn was started; once it returns true, fn never runs.
// The caller must call cancel before it closes fd, unless cancel has
// already returned false (a watch names the descriptor by number).
func whenReadable(fd int, fn func()) (cancel func() bool, err error) {
	w := &watcher
	w.mu.Lock()
	defer w.mu.Unlock()
	if watchRefused != nil {
		return nil, watchRefused
	}
	if w.ep == nil {
		if err := w.open(); err != nil {
			return nil, err // tried again at the next watch (EMFILE passes)
		}
	}
	id := w.next
	for _, taken := w.watches[id]; taken; _, taken = w.watches[id] {
		id++ // only after 2^32 watches, one of them still armed
	}
	w.next = id + 1
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(id)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	w.watches[id] = watch{fd: fd, fn: fn}
	if !w.running {
		w.running = true
		_ = w.ep.SetReadDeadline(time.Time{})
		go w.run()
	}
	return func() bool { return w.cancel(id) }, nil
}

func (w *readyWatcher) open() error {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return os.NewSyscallError("fcntl", err)
	}
	ep := os.NewFile(uintptr(fd), "epoll") // non-blocking: on the poller
	if err := ep.SetReadDeadline(time.Time{}); err != nil {
		ep.Close() // not on the poller: run could only spin
		return err
	}
	rc, err := ep.SyscallConn()
	if err != nil {
		ep.Close()
		return err
	}
	w.ep, w.rc, w.epfd, w.watches = ep, rc, fd, make(map[uint32]watch)
	return nil
}

func (w *readyWatcher) cancel(id uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt, ok := w.watches[id]
	if !ok {
		return false
	}
	delete(w.watches, id)
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, wt.fd, nil)
	if len(w.watches) == 0 {
		// Nothing left to wait for: the goroutine wakes and ends.
		_ = w.ep.SetReadDeadline(time.Unix(1, 0))
	}
	return true
}

// run waits for the watched descriptors and starts their functions, until
// nothing is watched.
func (w *readyWatcher) run() {
	events := make([]unix.EpollEvent, 32)
	var ready []func()
	for {
		var n int
		err := w.rc.Read(func(fd uintptr) bool {
			var err error
			for {
				n, err = unix.EpollWait(int(fd), events, 0)
				if err != unix.EINTR {
					break
				}
			}
			return n > 0 || err != nil
		})
		w.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint32(ev.Fd)
			wt, ok := w.watches[id]
			if !ok {
				continue // cancelled after it fired
			}
			delete(w.watches, id)
			// One-shot: disabled already; removed while fd is open
			// (its owner closes it only after cancel, which waits for mu).
			_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, wt.fd, nil)
			ready = append(ready, wt.fn)
		}
		if len(w.watches) == 0 {
			w.running = false
			w.mu.Unlock()
			runAll(ready)
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			_ = w.ep.SetReadDeadline(time.Time{}) // set when the last watch went; more came since
		}
		w.mu.Unlock()
		runAll(ready)
		clear(ready)
		ready = ready[:0]
	}
}

func runAll(fns []func()) {
	for _, fn := range fns {
		fn()
	}
}
