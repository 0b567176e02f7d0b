package policy

import (
	"fmt"
	"slices"
	"strings"
)

// users is a rule's "users", compiled.
type users struct {
	names     []string   // explicit names, sorted
	any       bool       // "*"
	nonroot   bool       // "autogroup:nonroot"
	same      bool       // "="
	templates []template // "{localpart}-admin"
	text      []string   // as written, for Explain
}

// template is prefix + {localpart} + suffix.
type template struct{ pre, suf string }

// login is a requested login name and whether it is a root account.
type login struct {
	name string
	root bool // "root", or an account with uid 0 on the destination (Request.RootUser)
}

// loginOf is the login r asks for.
func loginOf(r Request) login { return login{r.User, r.User == "root" || r.RootUser} }

// loginNamed is the login name judged by its name alone (embedded tests,
// Explain): only "root" is root.
func loginNamed(name string) login { return login{name, name == "root"} }

// match reports whether the login is allowed for a caller whose owner's
// localpart is lp ("" for tagged callers). A root account matches only
// where its name is listed explicitly; "*" in a reject rule matches every
// name, root and malformed names included.
func (u *users) match(l login, lp string, reject bool) bool {
	if reject && u.any {
		return true
	}
	user := l.name
	if !validUser(user) {
		return false
	}
	if _, ok := slices.BinarySearch(u.names, user); ok {
		return true
	}
	if l.root {
		return false
	}
	if u.any || u.nonroot {
		return true
	}
	if lp == "" {
		return false
	}
	if u.same && user == lp {
		return true
	}
	for _, t := range u.templates {
		if len(user) == len(t.pre)+len(lp)+len(t.suf) &&
			strings.HasPrefix(user, t.pre) && strings.HasSuffix(user, t.suf) &&
			user[len(t.pre):len(t.pre)+len(lp)] == lp {
			return true
		}
	}
	return false
}

// why explains, for Explain, why user does not match.
func (u *users) why(l login, lp string) string {
	list := "[" + strings.Join(u.text, " ") + "]"
	user := l.name
	switch {
	case !validUser(user):
		return fmt.Sprintf("users %s: %q is not a valid login name", list, user)
	case user == "root":
		return fmt.Sprintf("users %s do not name root (root must be named explicitly)", list)
	case l.root:
		return fmt.Sprintf("users %s do not name %s, a root account (uid 0: it must be named explicitly)", list, user)
	case lp == "" && (u.same || len(u.templates) > 0):
		return fmt.Sprintf("users %s do not include %q (the caller has no owner, so = and {localpart} match nothing)", list, user)
	}
	return fmt.Sprintf("users %s do not include %q", list, user)
}

// validUser reports whether s is a portable login name: 1 to 32 of
// [A-Za-z0-9._-], not starting with '-' and not "." or "..".
func validUser(s string) bool {
	if s == "" || len(s) > 32 || s[0] == '-' || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '.' || c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// addUser compiles one entry of "users".
func (u *users) add(s string) error {
	u.text = append(u.text, s)
	switch {
	case s == "*":
		u.any = true
	case s == "=":
		u.same = true
	case s == "autogroup:nonroot":
		u.nonroot = true
	case strings.HasPrefix(s, "autogroup:"):
		return fmt.Errorf("unknown autogroup %q (users take autogroup:nonroot)", s)
	case strings.Contains(s, "{") || strings.Contains(s, "}"):
		pre, suf, ok := strings.Cut(s, "{localpart}")
		if !ok || strings.ContainsAny(pre, "{}") || strings.ContainsAny(suf, "{}") {
			return fmt.Errorf("bad template %q: the only placeholder is {localpart}, used once", s)
		}
		if (pre != "" && !validUser(pre+"x")) || (suf != "" && !validUser("x"+suf)) {
			return fmt.Errorf("bad template %q: it cannot make a valid login name", s)
		}
		u.templates = append(u.templates, template{pre, suf})
	default:
		if !validUser(s) {
			return fmt.Errorf("%q is not a valid login name (1 to 32 of A-Z a-z 0-9 . _ -, not starting with -)", s)
		}
		if i, ok := slices.BinarySearch(u.names, s); !ok {
			u.names = slices.Insert(u.names, i, s)
		}
	}
	return nil
}
