package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// brokenPipe is ssh's stdout after ssh has exited.
type brokenPipe struct{}

func (brokenPipe) Write([]byte) (int, error) { return 0, syscall.EPIPE }

// TestPipeDeliversAfterClientGone is an upload stopped by the client: ssh
// writes its last bytes (its DISCONNECT) to nc and exits, so nc's stdin
// ends and its stdout is a broken pipe, while the server still sends
// (window adjusts) and is still working through what nc has queued. nc
// must stay until the server has everything and closes: its TCP lives in
// the process, so whatever it still holds when it exits is lost, and the
// server would wait on a silent conn for its keepalives to give up.
func TestPipeDeliversAfterClientGone(t *testing.T) {
	t.Run("stdin ends", func(t *testing.T) { testPipeDelivers(t, false) })
	// ssh also sends its ProxyCommand SIGHUP as it exits.
	t.Run("SIGHUP", func(t *testing.T) { testPipeDelivers(t, true) })
}

func testPipeDelivers(t *testing.T, hup bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	upload := bytes.Repeat([]byte("x"), 4<<20)
	got := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer s.Close()
		s.Write([]byte("window adjust"))    // the client's stdout is gone: this write fails there
		time.Sleep(1500 * time.Millisecond) // a slow path: the upload is still on its way
		b, err := io.ReadAll(s)
		if err == nil && len(b) != len(upload) {
			err = errors.New("short upload")
		}
		got <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if hup {
		time.AfterFunc(200*time.Millisecond, cancel)
	}
	pipe(ctx, c, bytes.NewReader(upload), brokenPipe{})
	// nc exits and its node with it: nothing it still held is delivered
	// (an abortive close models that on a kernel socket).
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("server: %v (nc left before the server had the upload and its end)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server never saw the end of the upload")
	}
}
