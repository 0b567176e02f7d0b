package sshmesh

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// unansweredOpens stands in for x/crypto's mux in the race where the conn
// closes as an open goes out: OpenChannel does not return (until the test
// ends; the race itself cannot be produced on demand). started is closed
// when an open has begun.
type unansweredOpens struct{ started, release chan struct{} }

func (u unansweredOpens) OpenChannel(string, []byte) (ssh.Channel, <-chan *ssh.Request, error) {
	close(u.started)
	<-u.release
	return nil, nil, errors.New("released")
}

// TestOpenChannelGivesUpWhenConnEnds: an open the client will never answer
// returns once the conn ends, so a forward's copy (and the conn's end,
// which waits for it) does not wait forever; on a conn that has ended, no
// open is tried at all.
func TestOpenChannelGivesUpWhenConnEnds(t *testing.T) {
	for _, endedFirst := range []bool{false, true} {
		u := unansweredOpens{started: make(chan struct{}), release: make(chan struct{})}
		defer close(u.release)
		ended := make(chan struct{})
		if endedFirst {
			close(ended)
		} else {
			go func() { <-u.started; close(ended) }()
		}
		ch, reqs, err := openChannel(u, ended, "forwarded-tcpip", nil)
		if !errors.Is(err, errConnEnded) || ch != nil || reqs != nil {
			t.Fatalf("ended first %v: openChannel = %v, %v, %v; want errConnEnded", endedFirst, ch, reqs, err)
		}
		if !endedFirst {
			<-u.started // the open was tried, and given up
			continue
		}
		// An open that was tried would start at once; a slow machine
		// can only make this miss one, never invent one.
		select {
		case <-u.started:
			t.Error("an open was tried on a conn that had ended")
		case <-time.After(500 * time.Millisecond):
		}
	}
}
