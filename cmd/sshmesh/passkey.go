package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sshmesh/sshmesh/checkpage"
)

// Where `sshmesh serve` keeps passkeys and their enrolment invitations,
// under its --state dir.
const (
	passkeyFileName  = "passkeys.json"
	inviteDirName    = "passkey-invites"
	passkeyUsageLine = "invite --owner OWNER [--state DIR] [--valid DURATION]"
)

// cmdPasskey is the admin's side of passkey enrolment: `sshmesh passkey
// invite` makes a single-use code with which OWNER enrols a passkey on the
// approval page of one of their check logins to this server.
func cmdPasskey(ctx context.Context, args []string, io stdio) error {
	if len(args) == 0 || args[0] != "invite" {
		fmt.Fprintf(io.err, "usage: sshmesh passkey %s\n", passkeyUsageLine)
		return errUsage
	}
	fs := newFlags("passkey invite", "--owner OWNER [--state DIR] [--valid DURATION]", io)
	owner := fs.String("owner", "", "the `owner` (as in the policy's nodes) who may enrol a passkey with the code (required)")
	stateDir := fs.String("state", defaultStateDir(), "`dir` of the server's state (serve --state)")
	valid := fs.Duration("valid", 24*time.Hour, "the code works for this long, once")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *owner == "" || fs.NArg() != 0 || *valid <= 0 {
		fs.Usage()
		return errUsage
	}
	code, err := checkpage.NewInvite(filepath.Join(*stateDir, inviteDirName), *owner, *valid)
	if err != nil {
		return err
	}
	fmt.Fprintf(io.out, "%s\n", code)
	fmt.Fprintf(io.err, "sshmesh: give this code to %s only; it enrols one passkey on the approval page of one of their check logins, within %v\n", *owner, *valid)
	return nil
}
