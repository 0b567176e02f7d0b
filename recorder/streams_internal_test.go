package recorder

import (
	"net"
	"testing"
)

// A stream that has read a large frame and waits for its next keeps at
// most payloadFirst of payload memory: waiting streams hold it outside
// the sender's pending budget (found by review: 64 KiB each before).
func TestWaitingStreamKeepsLittle(t *testing.T) {
	s := &Server{}
	here, there := net.Pipe()
	defer here.Close()
	defer there.Close()
	in := &inbound{c: here, stop: make(chan struct{})}
	if _, ok := s.takeStream(in.peer.Key); !ok {
		t.Fatal("takeStream refused the first stream")
	}
	for _, size := range []int{64 << 10, 3000, 40 << 10} {
		go writeFrame(there, frameData, make([]byte, size))
		typ, p, err := s.readFrame(in, MaxFrame)
		if err != nil || typ != frameData || len(p) != size {
			t.Fatalf("readFrame = %q, %d bytes, %v; want a %d-byte data frame", typ, len(p), err, size)
		}
		if c := cap(in.buf); c > payloadFirst {
			t.Errorf("after a %d-byte frame the stream keeps %d bytes for the next; want at most %d", size, c, payloadFirst)
		}
	}
	s.release(in)
}

// A stream whose frames are all read is not ended again: a Recheck then
// does not cut its refusal's linger short nor count it (found by review).
func TestFinishedStreamIsNotEnded(t *testing.T) {
	here, there := net.Pipe()
	defer here.Close()
	defer there.Close()
	in := &inbound{c: here, stop: make(chan struct{})}
	in.finish()
	if in.end("the recorder's policy changed") {
		t.Fatal("end ended a stream that was done")
	}
	if why := in.ended.Load(); why == nil || *why != streamDone {
		t.Fatalf("ended = %v, want the done mark", why)
	}
	open := &inbound{c: there, stop: make(chan struct{})}
	if !open.end("the recorder's policy changed") {
		t.Fatal("end did not end a stream in progress")
	}
	open.finish()
	if why := open.ended.Load(); why == nil || *why != "the recorder's policy changed" {
		t.Fatalf("finish replaced the reason the stream was ended with: %v", why)
	}
}
