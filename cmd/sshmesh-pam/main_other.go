//go:build !linux || !cgo

// Command sshmesh-pam runs the host's PAM stack for one sshmesh login. It
// needs Linux and cgo (CGO_ENABLED=1 and libpam0g-dev, or your system's
// PAM headers); this build has neither, so it only says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "sshmesh-pam: this build has no PAM support: build it on Linux with CGO_ENABLED=1 and the PAM headers (Debian: libpam0g-dev)")
	os.Exit(2)
}
