package main

import (
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/testkit"
)

// TestFloorTimesLocalEchoes: -floor's command (script(1) running the echo
// command in a fresh PTY) echoes every byte typed, so each round trip is
// timed; -floor with a command of the caller's is refused.
func TestFloorTimesLocalEchoes(t *testing.T) {
	testkit.NeedBinary(t, "script", "bsdutils")
	rtts, err := run(floorCommand(nil), 20, time.Millisecond, 30*time.Second, 60*time.Second)
	if err != nil {
		t.Fatalf("the local PTY's echoes: %v (after %d round trips)", err, len(rtts))
	}
	if len(rtts) != 20 {
		t.Fatalf("%d round trips timed, want 20", len(rtts))
	}
	for i, d := range rtts {
		if d <= 0 {
			t.Errorf("round trip %d took %v", i, d)
		}
	}
	if argv := floorCommand([]string{"ssh", "host"}); argv != nil {
		t.Errorf("-floor with a command: runs %q, want a usage error", argv)
	}
}
