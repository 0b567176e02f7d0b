package main

import (
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// loopbackPair listens on addr (a loopback address, port 0), connects to it
// with dial and returns the accepted conn and the client's conn.
func loopbackPair(t *testing.T, addr string, dial func(string) (net.Conn, error)) (accepted, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	accepted, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { accepted.Close() })
	return accepted, client
}

func plainDial(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }

// dialAsUID connects to addr from a socket that the kernel records as owned
// by uid, as if uid's process had made it: the socket is created while
// this thread's filesystem uid is uid (only this thread's, and only for that
// call). Needs root.
func dialAsUID(uid int) func(string) (net.Conn, error) {
	return func(addr string) (net.Conn, error) {
		runtime.LockOSThread()
		unix.Setfsuid(uid)
		c, err := net.Dial("tcp", addr)
		unix.Setfsuid(os.Geteuid())
		// setfsuid returns the fsuid it replaces, never an error:
		// unlock only once the thread is ours again, else the
		// thread ends with the goroutine.
		if cur, _ := unix.SetfsuidRetUid(os.Geteuid()); cur == os.Geteuid() {
			runtime.UnlockOSThread()
		}
		return c, err
	}
}

func TestLoopbackPeerUID(t *testing.T) {
	self := uint32(os.Getuid())
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr+"/own", func(t *testing.T) {
			acc, cl := loopbackPair(t, addr, plainDial)
			if uid, err := loopbackPeerUID(acc); err != nil || uid != self {
				t.Errorf("accepted conn: uid %d, %v; want %d", uid, err, self)
			}
			// And the other way round: the listener's side is ours too.
			if uid, err := loopbackPeerUID(cl); err != nil || uid != self {
				t.Errorf("dialed conn: uid %d, %v; want %d", uid, err, self)
			}
		})
		t.Run(addr+"/other", func(t *testing.T) {
			sshmeshtest.NeedRoot(t)
			const other = 54321 // need not exist in /etc/passwd
			acc, _ := loopbackPair(t, addr, dialAsUID(other))
			if uid, err := loopbackPeerUID(acc); err != nil || uid != other {
				t.Errorf("uid %d, %v; want %d", uid, err, other)
			}
		})
		// A client that sends its request and closes at once leaves a
		// FIN-WAIT/TIME-WAIT entry which the kernel reports as root's:
		// that must not pass for root.
		t.Run(addr+"/closed", func(t *testing.T) {
			dial := plainDial
			if os.Geteuid() == 0 {
				dial = dialAsUID(54321)
			}
			acc, cl := loopbackPair(t, addr, dial)
			cl.Write([]byte{5, 1, 0})
			cl.Close()
			acc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(acc); err != nil {
				t.Fatal(err)
			}
			if uid, err := loopbackPeerUID(acc); err == nil {
				t.Errorf("closed client: uid %d, want an error", uid)
			} else {
				t.Log(err)
			}
			acc.Close()
			time.Sleep(100 * time.Millisecond)
			if uid, err := loopbackPeerUID(acc); err == nil {
				t.Errorf("closed client, both closed: uid %d, want an error", uid)
			} else {
				t.Log(err)
			}
		})
	}
}
