package sshmesh

import "github.com/sshmesh/sshmesh/session"

// AsUser runs fn as the local user name the way forwarding does (asUser),
// for the tests of package sshmesh_test.
func AsUser(name string, fn func() error) error {
	u, err := session.LookupUser(name)
	if err != nil {
		return err
	}
	ids, err := idsOf(u)
	if err != nil {
		return err
	}
	return asUser(ids, fn)
}
