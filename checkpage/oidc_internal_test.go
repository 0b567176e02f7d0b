package checkpage

import "testing"

// TestSameLogin: the OIDC email and the caller's owner are compared
// ignoring ASCII case only; a look-alike that Unicode folding would equate
// (the Kelvin sign K, the long s ſ) is another person.
func TestSameLogin(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"kate@example.com", "kate@example.com", true},
		{"Kate@Example.COM", "kate@example.com", true},
		{"\u212Aate@example.com", "kate@example.com", false},
		{"\u017Fam@example.com", "sam@example.com", false},
		{"kate@example.com", "kate@example.co", false},
		{"kate@example.com", "katie@example.com", false},
	} {
		if got := sameLogin(tc.a, tc.b); got != tc.want {
			t.Errorf("sameLogin(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
