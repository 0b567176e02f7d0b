package netstack

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/ipv4"
)

// TestBindPack checks how Send groups datagrams for UDP GSO: runs of
// equal sizes, a shorter one ending a run, at most 64 per run and 64 KiB.
func TestBindPack(t *testing.T) {
	b := newAddrBind(netip.MustParseAddr("127.0.0.1"))
	ua := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	for _, tc := range []struct {
		sizes []int
		gso   bool
		want  []string // per message: segments x size
	}{
		{[]int{100, 100, 100}, true, []string{"3x100"}},
		{[]int{100, 100, 100}, false, []string{"1x100", "1x100", "1x100"}},
		{[]int{100, 100, 50, 100}, true, []string{"3x100", "1x100"}},
		{[]int{100, 200, 200}, true, []string{"1x100", "2x200"}},
		{repeat(1500, 70), true, []string{"43x1500", "27x1500"}},
		{repeat(100, 130), true, []string{"64x100", "64x100", "2x100"}},
		{[]int{7}, true, []string{"1x7"}},
	} {
		t.Run(fmt.Sprint(tc.sizes, tc.gso), func(t *testing.T) {
			bufs := make([][]byte, len(tc.sizes))
			for i, n := range tc.sizes {
				bufs[i] = make([]byte, n)
			}
			msgs := b.msgs.Get().(*[]ipv4.Message)
			ms := b.pack(*msgs, bufs, ua, tc.gso)
			var got []string
			total := 0
			for _, m := range ms {
				got = append(got, fmt.Sprintf("%dx%d", len(m.Buffers), len(m.Buffers[0])))
				if (len(m.OOB) > 0) != (len(m.Buffers) > 1 && gsoControlSize > 0) {
					t.Errorf("message of %d datagrams has %d bytes of UDP_SEGMENT control", len(m.Buffers), len(m.OOB))
				}
				total += len(m.Buffers)
			}
			if gsoControlSize == 0 { // no UDP GSO on this OS
				return
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
			if total != len(bufs) {
				t.Errorf("%d datagrams packed, want %d", total, len(bufs))
			}
		})
	}
}

func repeat(n, count int) []int {
	s := make([]int, count)
	for i := range s {
		s[i] = n
	}
	return s
}
