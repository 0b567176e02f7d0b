package envrule

import (
	"strings"
	"testing"
)

// TestListTidy: every entry is upper case, appears once and is not already
// covered by a prefix, so the list says each thing in one place. (The rule
// itself is tested by the shared table in internal/envtest, which policy,
// the server and session run.)
func TestListTidy(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range deniedPrefixes {
		if p != strings.ToUpper(p) || seen[p] {
			t.Errorf("prefix %q: not upper case or listed twice", p)
		}
		seen[p] = true
	}
	for _, n := range deniedNames {
		if n != strings.ToUpper(n) || seen[n] || !ValidName(n) {
			t.Errorf("name %q: not an upper-case name or listed twice", n)
		}
		seen[n] = true
		if p := DeniedPrefix(n); p != "" {
			t.Errorf("name %q is already refused by the prefix %q", n, p)
		}
	}
}
