package forward

import (
	"context"
	"io"
	"net"
	"sync"

	"golang.org/x/crypto/ssh"
)

// copyBufs holds the buffers of the forwarding copy loops. 32 KiB matches
// the SSH channel's maximum packet, so one read fills one packet.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// closeWriter is a conn that can send EOF and keep reading:
// *net.TCPConn, *net.UnixConn and ssh.Channel.
type closeWriter interface{ CloseWrite() error }

// accept accepts nch for conn, or closes conn when the client is gone.
func accept(nch ssh.NewChannel, conn net.Conn) (ssh.Channel, bool) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		conn.Close()
		return nil, false
	}
	go ssh.DiscardRequests(reqs)
	return ch, true
}

// pipe copies between the forwarded channel and conn both ways until both
// directions have ended, then closes both. Each direction's end is passed
// on as EOF (CloseWrite), so half-closed protocols work; when ctx ends (the
// SSH conn is gone) both are closed at once. It returns the bytes copied
// from the channel to conn and back.
func pipe(ctx context.Context, c Conn, ch ssh.Channel, conn net.Conn) (up, down int64) {
	stop := context.AfterFunc(ctx, func() {
		ch.Close()
		conn.Close()
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		down = copyHalf(c, ch, conn)
	}()
	up = copyHalf(c, conn, ch)
	wg.Wait()
	ch.Close()
	conn.Close()
	return up, down
}

// copyHalf copies src to dst and sends EOF to dst when src ends. On a write
// error it closes src too, so the other direction does not wait forever on a
// peer that can no longer be answered. Data moved is activity on c.
func copyHalf(c Conn, dst io.Writer, src io.Reader) int64 {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			c.Touch()
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				if cl, ok := src.(io.Closer); ok {
					cl.Close()
				}
				if cl, ok := dst.(io.Closer); ok {
					cl.Close()
				}
				return n
			}
		}
		if rerr != nil {
			break
		}
	}
	if cw, ok := dst.(closeWriter); ok {
		cw.CloseWrite()
	} else if cl, ok := dst.(io.Closer); ok {
		cl.Close()
	}
	return n
}
