package policy

import (
	"slices"

	"github.com/sshmesh/sshmesh/meshkey"
)

// LoginNamer is a policy that can list the login names it names for a
// caller on a destination node, so that a page can offer them (the web
// terminal does). A *Document is one.
type LoginNamer interface {
	LoginNames(caller, dst meshkey.Public) []string
}

// LoginNames lists, in rule order, the login names that the rules
// covering caller and dst (accept or check rules, not expired) spell out
// for this caller: names listed in users, "=" as the caller owner's
// localpart, and each {localpart} template filled in. A rule's wildcards
// ("*", autogroup:nonroot) name nothing here. The list only suggests:
// whether a name is allowed is Evaluate's answer (a reject rule above may
// refuse it, and a root account is judged by its uid there).
func (doc *Document) LoginNames(caller, dst meshkey.Public) []string {
	si, ok := doc.nodeByKey(caller)
	if !ok {
		return nil
	}
	di, ok := doc.nodeByKey(dst)
	if !ok {
		return nil
	}
	sn, dn := doc.nodeSet.node(si), doc.nodeSet.node(di)
	s, d := &sn, &dn
	now := doc.now()
	var names []string
	add := func(n string) {
		if validUser(n) && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for i := range doc.rules {
		r := &doc.rules[i]
		if r.action == Reject || !r.expires.IsZero() && !now.Before(r.expires) || !doc.srcCovers(r, s) || !dstCovers(r, s, d) {
			continue
		}
		for _, n := range r.users.names {
			add(n)
		}
		if s.localpart() == "" {
			continue
		}
		if r.users.same {
			add(s.localpart())
		}
		for _, t := range r.users.templates {
			add(t.pre + s.localpart() + t.suf)
		}
	}
	return names
}
