package sshmesh

import (
	"errors"
	"testing"

	"golang.org/x/crypto/ssh"
)

// unansweredOpens stands in for x/crypto's mux in the race where the conn
// closes as an open goes out: OpenChannel never returns (the race itself
// cannot be produced on demand).
type unansweredOpens struct{}

func (unansweredOpens) OpenChannel(string, []byte) (ssh.Channel, <-chan *ssh.Request, error) {
	select {}
}

// TestOpenChannelGivesUpWhenConnEnds: an open the client will never answer
// returns once the conn has ended, so a forward's copy (and the conn's end,
// which waits for it) does not wait forever.
func TestOpenChannelGivesUpWhenConnEnds(t *testing.T) {
	ended := make(chan struct{})
	close(ended)
	ch, reqs, err := openChannel(unansweredOpens{}, ended, "forwarded-tcpip", nil)
	if !errors.Is(err, errConnEnded) || ch != nil || reqs != nil {
		t.Fatalf("openChannel on an ended conn = %v, %v, %v; want errConnEnded", ch, reqs, err)
	}
}
