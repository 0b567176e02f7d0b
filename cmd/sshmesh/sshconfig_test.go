package main

import (
	"strings"
	"testing"
)

func TestConfigWord(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"/usr/local/bin/sshmesh", "/usr/local/bin/sshmesh", ""},
		{"/Users/Jane Doe/mesh.conf", `"/Users/Jane Doe/mesh.conf"`, ""},
		{"/tmp/a$b", "", "cannot go into an ssh config"},
		{"/tmp/100%", "", "cannot go into an ssh config"},
		{`/tmp/"x"`, "", "cannot go into an ssh config"},
	} {
		got, err := configWord(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("configWord(%q): err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("configWord(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
