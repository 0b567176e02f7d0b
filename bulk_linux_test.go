package sshmesh_test

import (
	"fmt"
	"io"
	"os/user"
	"syscall"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// BenchmarkLoginBulk moves 64 MiB down (`head -c`) and up (`cat >
// /dev/null`) through a login session ([sshmesh.LoginHandler]: the
// command's stdin and stdout are pipes the server copies) over the
// in-process mesh (WireGuard over loopback UDP, gVisor TCP), as the
// current user. Besides MB/s it reports this process's CPU (user+sys,
// client and server together; not the commands') per GiB moved each way,
// the figure to compare on a shared machine:
//
//	go test -run '^$' -bench LoginBulk -benchtime 3x .
func BenchmarkLoginBulk(b *testing.B) {
	const size = 64 << 20
	u, err := user.Current()
	if err != nil {
		b.Fatal(err)
	}
	m := sshmeshtest.NewMesh(b, 2)
	srv := &sshmesh.Server{Policy: allowPolicy(), Handler: sshmesh.LoginHandler()}
	sshmeshtest.Serve(b, m.Nodes[0], srv)
	c, err := sshmeshtest.Dial(b, m.Nodes[1], m.Nodes[0], srv, u.Username)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, dir := range []string{"down", "up"} {
		b.Run(dir, func(b *testing.B) {
			b.SetBytes(size)
			var spent time.Duration
			for b.Loop() {
				sess, err := c.NewSession()
				if err != nil {
					b.Fatal(err)
				}
				c0 := cpu()
				if dir == "down" {
					out, _ := sess.StdoutPipe()
					if err := sess.Start(fmt.Sprintf("head -c %d /dev/zero", size)); err != nil {
						b.Fatal(err)
					}
					if n, _ := io.Copy(io.Discard, out); n != size {
						b.Fatalf("got %d bytes, want %d", n, size)
					}
				} else {
					in, _ := sess.StdinPipe()
					if err := sess.Start("cat > /dev/null"); err != nil {
						b.Fatal(err)
					}
					if _, err := io.CopyN(in, zeros{}, size); err != nil {
						b.Fatal(err)
					}
					in.Close()
				}
				if err := sess.Wait(); err != nil {
					b.Fatal(err)
				}
				spent += cpu() - c0
			}
			b.ReportMetric(spent.Seconds()/(float64(b.N)*size/(1<<30)), "cpu-s/GiB")
		})
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
