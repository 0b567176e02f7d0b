package checkpage_test

import (
	"context"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/checkpage"
	"github.com/sshmesh/sshmesh/policy"
)

// BenchmarkLogin compares a whole login (TCP connect, SSH handshake, one
// exec, exit) under an accept rule with one under a check rule whose
// approval is cached: the difference is what check mode adds once approved.
func BenchmarkLogin(b *testing.B) {
	for _, tc := range []struct {
		name   string
		accept bool
	}{{"accept", true}, {"check-cached", false}} {
		b.Run(tc.name, func(b *testing.B) {
			w := newWorld(b, nil)
			w.accept = tc.accept
			if !tc.accept {
				l := w.login(aliceLap, "deploy")
				select {
				case u := <-l.gotURL:
					approveTB(b, u)
				case <-time.After(10 * time.Second):
					b.Fatal("no check URL")
				}
				<-l.done
			}
			for b.Loop() {
				l := w.login(aliceLap, "deploy")
				<-l.done
				if l.err != nil || l.out != "hello deploy" {
					b.Fatalf("login: %v %q", l.err, l.out)
				}
			}
		})
	}
}

// BenchmarkCheckCached is the Checker's own cost for a login whose
// approval is cached.
func BenchmarkCheckCached(b *testing.B) {
	w := newWorld(b, nil)
	l := w.login(aliceLap, "deploy")
	approveTB(b, <-l.gotURL)
	<-l.done
	r := &sshmesh.CheckRequest{
		Decision: policy.Decision{Action: policy.Check, LocalUser: "deploy", Rule: "ssh[0]", CheckPeriod: time.Hour},
		User:     "deploy",
		Peer:     sshmesh.Peer{Key: w.keys[aliceLap]},
	}
	var c *checkpage.Checker = w.checker
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Check(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

func approveTB(tb testing.TB, u string) {
	tb.Helper()
	code, _, csrf := pageTB(tb, alicePhone, u)
	if code != 200 {
		tb.Fatalf("GET %s: %d", u, code)
	}
	if code, body := decideTB(tb, alicePhone, u, "approve", csrf); code != 200 {
		tb.Fatalf("approve: %d %s", code, body)
	}
}
