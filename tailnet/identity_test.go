package tailnet

import (
	"errors"
	"slices"
	"testing"
	"time"

	"tailscale.com/client/tailscale/apitype"
	"tailscale.com/tailcfg"
	"tailscale.com/types/key"

	"github.com/sshmesh/sshmesh/meshkey"
)

func whois(n tailcfg.Node, login string) *apitype.WhoIsResponse {
	return &apitype.WhoIsResponse{Node: &n, UserProfile: &tailcfg.UserProfile{ID: n.User, LoginName: login}}
}

func TestIdentityOfUserNode(t *testing.T) {
	k := key.NewNode().Public()
	id, err := identityOf(whois(tailcfg.Node{ID: 1, Name: "alice-laptop.tail.example.", Key: k, User: 7}, "alice@example.com"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id.Key != meshkey.Public(k.Raw32()) || id.Node != "alice-laptop" || id.Owner != "alice@example.com" || id.Tags != nil {
		t.Fatalf("identity %+v: want alice-laptop owned by alice@example.com, key %v", id, k)
	}
}

func TestIdentityOfTaggedNodeHasNoOwner(t *testing.T) {
	// A tagged node's "user" is the coordinator's placeholder: it must not
	// become an owner (it would pass as autogroup:member).
	k := key.NewNode().Public()
	id, err := identityOf(whois(tailcfg.Node{Name: "ci-1.tail.example.", Key: k, User: 9, Tags: []string{"tag:x", "tag:ci"}}, "tagged-devices"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id.Owner != "" || !slices.Equal(id.Tags, []string{"tag:ci", "tag:x"}) || id.Node != "ci-1" {
		t.Fatalf("identity %+v: want ci-1 with tags [tag:ci tag:x] (sorted) and no owner", id)
	}
}

func TestIdentityOfSharedNodeIsRefused(t *testing.T) {
	n := tailcfg.Node{Name: "mallory-pc.other.example.", Key: key.NewNode().Public(), User: 3, Sharer: 4}
	if id, err := identityOf(whois(n, "mallory@other.example"), time.Now()); !errors.Is(err, ErrSharedNode) {
		t.Fatalf("shared-in node: got %+v, %v; want ErrSharedNode", id, err)
	}
}

func TestIdentityOfExpiredNodeIsRefused(t *testing.T) {
	now := time.Now()
	for name, n := range map[string]tailcfg.Node{
		"expiry passed":       {Name: "a.t.", Key: key.NewNode().Public(), KeyExpiry: now.Add(-time.Second)},
		"coordinator says so": {Name: "a.t.", Key: key.NewNode().Public(), Expired: true},
		"expires exactly now": {Name: "a.t.", Key: key.NewNode().Public(), KeyExpiry: now},
	} {
		if _, err := identityOf(whois(n, "alice@example.com"), now); !errors.Is(err, ErrExpired) {
			t.Errorf("%s: got %v, want ErrExpired", name, err)
		}
	}
	n := tailcfg.Node{Name: "a.t.", Key: key.NewNode().Public(), KeyExpiry: now.Add(time.Hour)}
	if _, err := identityOf(whois(n, "alice@example.com"), now); err != nil {
		t.Errorf("expiring in an hour: %v", err)
	}
}

func TestIdentityOfRefusesWhatItCannotName(t *testing.T) {
	for name, w := range map[string]*apitype.WhoIsResponse{
		"no answer":          nil,
		"no node":            {},
		"no node key":        whois(tailcfg.Node{Name: "a.t."}, "alice@example.com"),
		"untagged, no user":  {Node: &tailcfg.Node{Name: "a.t.", Key: key.NewNode().Public()}},
		"untagged, no login": whois(tailcfg.Node{Name: "a.t.", Key: key.NewNode().Public()}, ""),
	} {
		if id, err := identityOf(w, time.Now()); err == nil {
			t.Errorf("%s: got %+v, want an error", name, id)
		}
	}
}

func TestNodeNameFallsBackToComputedName(t *testing.T) {
	if got := nodeName(&tailcfg.Node{ComputedName: "box"}); got != "box" {
		t.Fatalf("nodeName = %q, want box", got)
	}
}

func TestSameIdentityIgnoresRenames(t *testing.T) {
	k := key.NewNode().Public()
	a, _ := identityOf(whois(tailcfg.Node{Name: "old.t.", Key: k, Tags: []string{"tag:ci"}}, ""), time.Now())
	b, _ := identityOf(whois(tailcfg.Node{Name: "new.t.", Key: k, Tags: []string{"tag:ci"}}, ""), time.Now())
	c, _ := identityOf(whois(tailcfg.Node{Name: "new.t.", Key: k, Tags: []string{"tag:other"}}, ""), time.Now())
	if !sameIdentity(a, b) || sameIdentity(a, c) {
		t.Fatalf("sameIdentity: rename %v (want true), tag change %v (want false)", sameIdentity(a, b), sameIdentity(a, c))
	}
}
