package policy

import "testing"

func TestSocketForwardAllowed(t *testing.T) {
	pats := []string{"127.0.0.1:*", "*:*", "/tmp/*.sock", "/run/user/*/gnupg/S.gpg-agent", "/home/ann/app.sock"}
	tests := []struct {
		path string
		want bool
	}{
		{"/tmp/x.sock", true},
		{"/tmp//x.sock", true}, // cleaned
		{"/tmp/d/x.sock", false},
		{"/tmp/../etc/x.sock", false},
		{"/run/user/1000/gnupg/S.gpg-agent", true},
		{"/home/ann/app.sock", true},
		{"/home/ann/other.sock", false},
		{"tmp/x.sock", false}, // relative
		{"", false},
	}
	for _, tt := range tests {
		if got := SocketForwardAllowed(pats, tt.path); got != tt.want {
			t.Errorf("SocketForwardAllowed(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
	if SocketForwardAllowed([]string{"*:*"}, "/tmp/x.sock") {
		t.Error("*:* allowed a socket")
	}
}
