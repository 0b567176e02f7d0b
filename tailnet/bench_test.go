package tailnet_test

import (
	"os/exec"
	"testing"
)

// BenchmarkStockSSHTrue is `ssh host true` from alice's node (the stock
// ssh through `tailscale nc`, curve25519, chacha20-poly1305) against
// sshmesh on tsnet and against Tailscale SSH (tailscaled --ssh, userspace)
// on the same headscale: both use Tailscale's userspace data path, the SSH
// layer and session start differ. Run with -benchtime=30x; the first
// login of each is made before timing (path discovery takes seconds).
func BenchmarkStockSSHTrue(b *testing.B) {
	f := newTailnetFixture(b)
	tl := needTools(b)
	tsSSH := startTailscaled(b, tl, f.hs, "tailscale-ssh", f.hs.authKey(0, "tag:server"), "--ssh")
	tsIP := tsSSH.ip4()
	targets := []struct{ name, host string }{{"sshmesh-tsnet", f.host}, {"tailscaled-ssh", tsIP}}
	args := func(host string) []string {
		return append(append(sshOptions(f.alice), "-o", "Ciphers=chacha20-poly1305@openssh.com",
			"-o", "KexAlgorithms=curve25519-sha256", f.aliceUser.Name+"@"+host), "true")
	}
	for _, tg := range targets {
		if out, err := exec.Command("ssh", args(tg.host)...).CombinedOutput(); err != nil {
			b.Fatalf("warm-up ssh to %s: %v\n%s", tg.name, err, out)
		}
	}
	for _, tg := range targets {
		b.Run(tg.name, func(b *testing.B) {
			for b.Loop() {
				if out, err := exec.Command("ssh", args(tg.host)...).CombinedOutput(); err != nil {
					b.Fatalf("ssh to %s: %v\n%s", tg.name, err, out)
				}
			}
		})
	}
}
