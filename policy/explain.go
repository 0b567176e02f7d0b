package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Explanation says how a [Document] decides one login, rule by rule.
type Explanation struct {
	Src, Dst Identity  // the caller and the destination, as the document names them
	User     string    // the login name asked for
	At       time.Time // the time rule expiry was judged at
	Decision Decision  // what Evaluate decides
	// Steps has one entry per rule tried, in document order: each rule
	// above the one that decided, then that rule. When no rule matched it
	// lists every rule.
	Steps []Step
}

// Step is one rule tried by [Document.Explain].
type Step struct {
	Rule    string // e.g. "ssh[0]"
	Pos     string // e.g. "policy.hujson:5"
	Action  Action // the rule's action
	Matched bool   // this rule decided
	Reason  string // why it did not match; "" when Matched
}

// Explain says how the document decides a login from the node named src
// into the node named dst as user, at the document's current time (see
// [Document.Now]): the decision, the rule that made it and where, and for
// each rule above it why it did not match. It is the slow, rule-by-rule
// reading of the document; its decision is always Evaluate's.
//
// In a tailnet document, which names no nodes, src and dst are what the
// coordinator would say of them: a login ("alice@example.com", an untagged
// node of that user) or tags ("tag:ci", or "tag:ci,tag:x" for a node with
// several), so no live tailnet is needed. Explain then decides as Evaluate
// does with Request.Caller and Request.Server set to those identities.
func (doc *Document) Explain(src, dst, user string) (Explanation, error) {
	if doc.tailnet {
		sid, err := parseTailnetIdentity(src)
		if err != nil {
			return Explanation{}, fmt.Errorf("policy: %s: caller: %w; a tailnet document names no nodes", doc.file, err)
		}
		did, err := parseTailnetIdentity(dst)
		if err != nil {
			return Explanation{}, fmt.Errorf("policy: %s: destination: %w; a tailnet document names no nodes", doc.file, err)
		}
		s, d := doc.tailnetCaller(&sid, nil), doc.tailnetServer(&did, nil)
		return doc.explain(sid, did, &s, &d, user), nil
	}
	si, ok := doc.nodeIndex(src)
	if !ok {
		return Explanation{}, fmt.Errorf("policy: %s: no node named %q", doc.file, src)
	}
	di, ok := doc.nodeIndex(dst)
	if !ok {
		return Explanation{}, fmt.Errorf("policy: %s: no node named %q", doc.file, dst)
	}
	s, d := doc.nodeSet.node(si), doc.nodeSet.node(di)
	return doc.explain(s.id, d.id, &s, &d, user), nil
}

// explain is Explain for caller s and destination d, which are src and dst
// as the document sees them.
func (doc *Document) explain(src, dst Identity, s, d *node, user string) Explanation {
	now := doc.now()
	e := Explanation{Src: src, Dst: dst, User: user, At: now}
	decided := int32(-1)
	for i := range doc.rules {
		r := &doc.rules[i]
		st := Step{Rule: r.name, Pos: r.dec.RulePos, Action: r.action}
		switch {
		case !doc.srcCovers(r, s):
			st.Reason = fmt.Sprintf("src [%s] does not include %s", strings.Join(r.src, " "), describe(s.id))
		case !dstCovers(r, s, d):
			st.Reason = fmt.Sprintf("dst [%s] does not include %s", strings.Join(r.dst, " "), describe(d.id))
			if r.self {
				st.Reason += "; autogroup:self covers only nodes of " + ownerOrNone(s.id.Owner)
			}
		case r.action != Reject && !reaches(s, d):
			st.Reason = fmt.Sprintf("%s is an untagged node of %s, not the caller's: accept and check rules reach only tagged nodes and the caller's own",
				describe(d.id), ownerOrNone(d.id.Owner))
		case !r.expires.IsZero() && !now.Before(r.expires):
			st.Reason = "expired at " + r.expires.Format(time.RFC3339)
		case !r.users.match(loginNamed(user), s.localpart(), r.action == Reject):
			st.Reason = r.users.why(loginNamed(user), s.localpart())
		default:
			st.Matched = true
		}
		e.Steps = append(e.Steps, st)
		if st.Matched {
			decided = int32(i)
			break
		}
	}
	e.Decision = doc.decision(src, decided, user)
	return e
}

func ownerOrNone(o string) string {
	if o == "" {
		return "the caller's owner, and the caller has none"
	}
	return o
}

// describe names a node with its owner or tags: "lap (ann@example.com)";
// a tailnet node Explain knows only by login or tags is "a node of
// ann@example.com" or "a node tagged tag:ci".
func describe(id Identity) string {
	switch {
	case id.Node != "" && id.Owner != "":
		return id.Node + " (" + id.Owner + ")"
	case id.Node != "":
		return id.Node + " (" + strings.Join(id.Tags, ", ") + ")"
	case len(id.Tags) > 0:
		return "a node tagged " + strings.Join(id.Tags, ", ")
	case id.Owner != "":
		return "a node of " + id.Owner
	}
	return "a node with no owner and no tags"
}

// label names a node in one word: its name, else its owner's login or its
// tags (a tailnet node as tests and Explain name it).
func label(id Identity) string {
	switch {
	case id.Node != "":
		return id.Node
	case len(id.Tags) > 0:
		return strings.Join(id.Tags, ",")
	}
	return id.Owner
}

// srcCovers reports whether a src selector of r names s, selector by
// selector (the reference for the precomputed index).
func (doc *Document) srcCovers(r *rule, s *node) bool {
	for _, sel := range r.src {
		switch {
		case sel == anyone:
			return true
		case sel == autogroupMember:
			if s.id.Owner != "" {
				return true
			}
		case sel == autogroupTagged:
			if len(s.id.Tags) > 0 {
				return true
			}
		case strings.HasPrefix(sel, "group:"):
			if s.id.Owner != "" && slices.Contains(doc.groups[sel], s.id.Owner) {
				return true
			}
		case strings.HasPrefix(sel, "tag:"):
			if slices.Contains(s.id.Tags, sel) {
				return true
			}
		case strings.Contains(sel, "@"):
			if s.id.Owner == sel {
				return true
			}
		default:
			if s.id.Node == sel {
				return true
			}
		}
	}
	return false
}

// dstCovers reports whether a dst selector of r names d for caller s.
func dstCovers(r *rule, s, d *node) bool {
	for _, sel := range r.dst {
		switch {
		case sel == anyone:
			return true
		case sel == self:
			if s.id.Owner != "" && s.id.Owner == d.id.Owner {
				return true
			}
		case strings.HasPrefix(sel, "tag:"):
			if slices.Contains(d.id.Tags, sel) {
				return true
			}
		case strings.Contains(sel, "@"): // tailnet: a server that person owns
			if d.id.Owner == sel {
				return true
			}
		default:
			if d.id.Node == sel {
				return true
			}
		}
	}
	return false
}

// String returns a readable account: the decision on the first line, then
// one line per rule tried.
func (e Explanation) String() string {
	var b strings.Builder
	d := e.Decision
	fmt.Fprintf(&b, "%s → %s as %s: %s", label(e.Src), label(e.Dst), e.User, d.Action)
	if d.Rule == "" {
		b.WriteString(" (no rule matched: deny by default)\n")
	} else {
		fmt.Fprintf(&b, " by %s (%s)\n", d.Rule, d.RulePos)
	}
	if d.Allowed() {
		fmt.Fprintf(&b, "  local user: %s\n", d.LocalUser)
	}
	if d.Action == Check {
		fmt.Fprintf(&b, "  check: approval lasts %s\n", d.CheckPeriod)
	}
	if d.Message != "" {
		fmt.Fprintf(&b, "  message: %q\n", d.Message)
	}
	if !d.Expires.IsZero() {
		fmt.Fprintf(&b, "  rule expires: %s\n", d.Expires.Format(time.RFC3339))
	}
	if d.Allowed() {
		writeGrants(&b, d)
	}
	if len(e.Steps) > 0 {
		b.WriteString("rules tried:\n")
	}
	for _, st := range e.Steps {
		what := "matched"
		if !st.Matched {
			what = "no match: " + st.Reason
		}
		fmt.Fprintf(&b, "  %s (%s) %s: %s\n", st.Rule, st.Pos, st.Action, what)
	}
	return b.String()
}

// writeGrants lists what an allowing decision's rule grants beyond the
// login itself: session limits, environment, forwarding and recording,
// each line only when the rule grants it.
func writeGrants(b *strings.Builder, d Decision) {
	if d.SessionDuration > 0 {
		fmt.Fprintf(b, "  sessions end after: %s\n", d.SessionDuration)
	}
	if len(d.AcceptEnv) > 0 {
		fmt.Fprintf(b, "  environment the client may set: %s\n", strings.Join(d.AcceptEnv, " "))
	}
	if d.AgentForward {
		b.WriteString("  agent forwarding (ssh -A): allowed\n")
	}
	if len(d.LocalForward) > 0 {
		fmt.Fprintf(b, "  local forwarding (ssh -L, -D) to: %s\n", strings.Join(d.LocalForward, " "))
	}
	if len(d.RemoteForward) > 0 {
		fmt.Fprintf(b, "  remote forwarding (ssh -R) on: %s\n", strings.Join(d.RemoteForward, " "))
	}
	if d.Record {
		onFailure := d.OnRecordingFailure
		if onFailure == "" {
			onFailure = "fail-open"
		}
		fmt.Fprintf(b, "  recorded: yes (%s)\n", onFailure)
	}
}
