package session_test

import (
	"fmt"

	"github.com/sshmesh/sshmesh/session"
)

// A server applies the host's own rules to every login of a local account:
// here the host's PAM stack /etc/pam.d/sshmesh (install docs/pam.d/sshmesh,
// and build cmd/sshmesh-pam with cgo next to the program). Give the rules to
// sshmesh.Server's HostRules field; the zero value applies /etc/nologin and
// account expiry without PAM.
func ExampleHostRules() {
	rules := session.HostRules{PAMService: "sshmesh"}
	if err := rules.Validate(); err != nil {
		fmt.Println("PAM cannot be used here:", err != nil)
		return
	}
	fmt.Println("PAM service", rules.PAMService)
}
