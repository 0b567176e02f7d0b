package policy

import (
	"slices"
	"testing"
)

// TestLoginNames: the names a page may offer a caller are the ones the
// covering accept and check rules spell out for it, in rule order, with
// "=" and {localpart} filled in; reject rules, other pairs and wildcards
// add nothing.
func TestLoginNames(t *testing.T) {
	doc := loadFull(t)
	for _, tc := range []struct {
		name     string
		src, dst Identity
		want     []string
	}{
		{"check rule for root, then ci's deploy does not cover alice", aliceLaptop, build1, []string{"root"}},
		{"self: = and a template", aliceDesk, aliceLaptop, []string{"alice", "alice-admin"}},
		{"ci into a server", ci, build1, []string{"deploy"}},
		{"wildcards name nothing", carolLaptop, carolLaptop, []string{"carol", "carol-admin"}},
		{"no rule covers the pair", bobLaptop, aliceLaptop, nil},
		{"unknown caller", Identity{Key: testKey(99)}, build1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := doc.LoginNames(tc.src.Key, tc.dst.Key)
			if !slices.Equal(got, tc.want) {
				t.Errorf("LoginNames(%s, %s) = %q, want %q", tc.src.Node, tc.dst.Node, got, tc.want)
			}
		})
	}
}
