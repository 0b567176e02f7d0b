package checkpage

import (
	"context"
	"crypto/subtle"
	"errors"
	"html/template"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/policy"
)

// pageInfo is what the page shows about a pending check.
type pageInfo struct {
	Caller     policy.Identity
	CallerName string
	CallerAddr string
	Server     string
	ServerAddr string
	User       string
	LocalUser  string
	Rule       string
	RulePos    string
	Period     string
}

func (c *Checker) describe(r *sshmesh.CheckRequest, period time.Duration) pageInfo {
	d := r.Decision
	caller := d.Caller
	if caller.Key.IsZero() {
		caller.Key = r.Peer.Key
	}
	server := ""
	if r.Peer.SelfIdentity != nil {
		server = r.Peer.SelfIdentity.Name()
	} else if !r.Peer.Self.IsZero() {
		server = r.Peer.Self.Short()
		if id, ok := c.Identify(r.Peer.Self); ok {
			server = id.Name()
		}
	}
	return pageInfo{
		Caller:     caller,
		CallerName: caller.Name(),
		CallerAddr: r.Peer.Addr.Addr().String(),
		Server:     server,
		ServerAddr: r.Peer.Local.Addr().String(),
		User:       r.User,
		LocalUser:  d.LocalUser,
		Rule:       d.Rule,
		RulePos:    d.RulePos,
		Period:     shortDuration(period),
	}
}

// StateHeader is the response header in which the page says what became of
// the check a request named: "pending", "approved", "denied", or "ended"
// (no such check, or no longer). A local link (`sshmesh nc`) stops when the
// check is no longer pending.
const StateHeader = "Sshmesh-Check"

type connKey struct{}

// Serve serves the approval page on l until Close. l must be an
// [sshmesh.Listener] (its conns carry their mesh peer): the page decides
// who may approve from it. It returns [http.ErrServerClosed] after Close.
func (c *Checker) Serve(l net.Listener) error {
	c.init()
	if c.Identify == nil {
		return errors.New("checkpage: Checker.Identify is nil")
	}
	srv := &http.Server{
		Handler:           c.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, conn)
		},
	}
	c.srvMu.Lock()
	if c.closed {
		c.srvMu.Unlock()
		return http.ErrServerClosed
	}
	if c.srvs == nil {
		c.srvs = make(map[*http.Server]struct{})
	}
	c.srvs[srv] = struct{}{}
	c.srvMu.Unlock()
	return srv.Serve(l)
}

// Close stops serving the page. Pending checks go on until they end.
func (c *Checker) Close() error {
	c.srvMu.Lock()
	defer c.srvMu.Unlock()
	c.closed = true
	var err error
	for s := range c.srvs {
		if cerr := s.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

func (c *Checker) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /check/{token}", c.servePage)
	mux.HandleFunc("POST /check/{token}", c.serveDecision)
	mux.HandleFunc("POST /check/{token}/passkey/begin", c.servePasskeyBegin)
	mux.HandleFunc("POST /check/{token}/passkey/finish", c.servePasskeyFinish)
	mux.HandleFunc("POST /check/{token}/enrol/begin", c.serveEnrolBegin)
	mux.HandleFunc("POST /check/{token}/enrol/finish", c.serveEnrolFinish)
	mux.HandleFunc("POST /check/{token}/oidc/start", c.serveOIDCStart)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.render(w, http.StatusNotFound, msgPage{Title: "Not found", Text: "There is nothing here. Approval pages live at the URL the ssh client printed."})
	})
	return securityHeaders(c.hostGuard(mux))
}

// hostGuard answers only requests whose Host is the mesh address and port
// their conn reached (see [sshmesh.HostIsAddr]): a page elsewhere that
// rebinds a name of its own to this address gets 421, not the page.
func (c *Checker) hostGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _ := r.Context().Value(connKey{}).(net.Conn)
		var local netip.AddrPort
		if conn != nil {
			if a, ok := conn.LocalAddr().(interface{ AddrPort() netip.AddrPort }); ok {
				local = a.AddrPort()
			} else if ap, err := netip.ParseAddrPort(conn.LocalAddr().String()); err == nil {
				local = ap
			}
		}
		if !local.IsValid() || !sshmesh.HostIsAddr(r.Host, local) {
			c.logger().Warn("check page: refused a request for another host", "host", r.Host, "addr", r.RemoteAddr)
			http.Error(w, "wrong host: open the approval page at the address the ssh client printed", http.StatusMisdirectedRequest)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// visitor returns the mesh identity of the request's conn.
func (c *Checker) visitor(r *http.Request) (policy.Identity, bool) {
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	p, ok := sshmesh.PeerOf(conn)
	if !ok {
		return policy.Identity{}, false
	}
	if p.Identity != nil {
		// A tailnet's coordinator vouches for the visitor (WhoIs).
		return *p.Identity, true
	}
	id, ok := c.Identify(p.Key)
	if !ok {
		return policy.Identity{Key: p.Key}, true
	}
	id.Key = p.Key
	return id, true
}

// lookup returns the pending check of the request's token and whether the
// visitor may decide it, having written the error page when not.
func (c *Checker) lookup(w http.ResponseWriter, r *http.Request) (*pending, policy.Identity, bool) {
	c.mu.Lock()
	p := c.byToken[r.PathValue("token")]
	c.mu.Unlock()
	if p == nil {
		w.Header().Set(StateHeader, "ended")
		c.render(w, http.StatusNotFound, msgPage{Title: "No such check", Text: "This link is not (or no longer) valid: it was used already, or its login stopped waiting."})
		return nil, policy.Identity{}, false
	}
	v, ok := c.visitor(r)
	if !ok || v.Owner == "" || v.Owner != p.info.Caller.Owner {
		c.logger().Warn("check page: visitor may not decide", "peer", v.Key.String(), "node", v.Node, "owner", v.Owner,
			"caller_owner", p.info.Caller.Owner, "rule", p.info.Rule)
		c.render(w, http.StatusForbidden, msgPage{Title: "Forbidden", Text: "Only a node of the same owner as the node that asks may approve this login."})
		return nil, v, false
	}
	return p, v, true
}

func (c *Checker) servePage(w http.ResponseWriter, r *http.Request) {
	p, v, ok := c.lookup(w, r)
	if !ok {
		return
	}
	page := checkPage{pageInfo: p.info, Visitor: v.Name(), CSRF: p.csrf, Remaining: shortDuration(time.Until(p.expires)),
		Passkey: p.proof == policy.CheckProofPasskey, Enrol: c.InviteDir != "", OIDC: p.proof == policy.CheckProofOIDC}
	if page.OIDC && c.OIDC != nil {
		page.Issuer = c.OIDC.Issuer
	}
	if page.Passkey || page.OIDC {
		if c.passkeys != nil {
			creds, err := c.passkeys.credentials(p.info.Caller.Owner)
			if err != nil {
				c.logger().Error("check page: passkeys unreadable", "err", err)
			}
			page.Enrolled = len(creds)
		}
		nonce, err := randomToken()
		if err != nil {
			c.render(w, http.StatusInternalServerError, msgPage{Title: "Error", Text: err.Error()})
			return
		}
		page.Nonce = nonce
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-"+nonce+
			"'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	}
	w.Header().Set(StateHeader, "pending")
	c.render(w, http.StatusOK, page)
}

func (c *Checker) serveDecision(w http.ResponseWriter, r *http.Request) {
	p, v, ok := c.lookup(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		c.render(w, http.StatusBadRequest, msgPage{Title: "Bad request", Text: "The form could not be read."})
		return
	}
	if got := r.PostForm.Get("csrf"); subtle.ConstantTimeCompare([]byte(got), []byte(p.csrf)) != 1 {
		c.logger().Warn("check page: form token missing or wrong", "peer", v.Key.String(), "rule", p.info.Rule)
		c.render(w, http.StatusForbidden, msgPage{Title: "Forbidden", Text: "The form token is missing or wrong. Open the link from the ssh client again."})
		return
	}
	var st state
	switch r.PostForm.Get("decision") {
	case "approve":
		if p.proof != policy.CheckProofMesh {
			c.logger().Warn("check page: approval without a passkey refused", "peer", v.Key.String(), "rule", p.info.Rule)
			c.render(w, http.StatusForbidden, msgPage{Title: "Forbidden", Text: "This login needs a passkey to be approved."})
			return
		}
		st = stateApproved
	case "deny":
		st = stateDenied
	default:
		c.render(w, http.StatusBadRequest, msgPage{Title: "Bad request", Text: "Approve or Deny?"})
		return
	}
	c.decide(w, p, v, st, false)
}

// decide ends p with st, decided by visitor v, and answers the browser
// (with JSON for the passkey API).
func (c *Checker) decide(w http.ResponseWriter, p *pending, v policy.Identity, st state, asJSON bool) {
	answer := func(code int, title, text string) {
		if asJSON {
			writeJSON(w, code, apiAnswer{Title: title, Text: text})
			return
		}
		c.render(w, code, msgPage{Title: title, Text: text})
	}
	c.mu.Lock()
	decided := c.finish(p, st)
	c.mu.Unlock()
	if !decided {
		w.Header().Set(StateHeader, "ended")
		answer(http.StatusNotFound, "No such check", "This check has ended already.")
		return
	}
	attrs := []any{"peer", p.info.Caller.Key.String(), "node", p.info.CallerName, "local_user", p.key.LocalUser,
		"rule", p.info.Rule, "proof", p.proof, "by_peer", v.Key.String(), "by_node", v.Node, "by_owner", v.Owner}
	if st == stateApproved {
		c.logger().Info("check approved", append(attrs, "period", p.period)...)
		c.save()
		w.Header().Set(StateHeader, "approved")
		answer(http.StatusOK, "Approved", "Login approved for "+p.info.Period+". You can close this tab.")
		return
	}
	c.logger().Info("check denied", attrs...)
	w.Header().Set(StateHeader, "denied")
	answer(http.StatusOK, "Denied", "Login denied. The ssh client has been told.")
}

type checkPage struct {
	pageInfo
	Visitor   string
	CSRF      string
	Remaining string
	Passkey   bool   // approval needs a passkey
	Enrolled  int    // passkeys enrolled for the caller's owner
	Enrol     bool   // the page takes enrolment codes
	Nonce     string // the page script's CSP nonce
	OIDC      bool   // approval needs a sign-in at the identity provider
	Issuer    string // the identity provider; "" when the server has none
}

type msgPage struct {
	Title, Text string
}

func (c *Checker) render(w http.ResponseWriter, code int, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	name := "msg"
	if _, ok := data.(checkPage); ok {
		name = "check"
	}
	if err := pages().ExecuteTemplate(w, name, data); err != nil {
		c.logger().Error("check page: template", "err", err)
	}
}

// pages is parsed on first use, not at init: every sshmesh process (an
// nc too) would pay for it at start-up.
var pages = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("").Parse(`
{{define "head"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>sshmesh: {{.}}</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th{text-align:left;padding:.2em 1em .2em 0;color:#555;font-weight:normal}
td{padding:.2em 0}code{font-size:95%}button{font-size:1em;padding:.5em 1.5em;margin-right:1em}
.muted{color:#666;font-size:90%}
</style></head><body>{{end}}

{{define "msg"}}{{template "head" .Title}}
<h1 id="title">{{.Title}}</h1>
<p id="text">{{.Text}}</p>
</body></html>{{end}}

{{define "check"}}{{template "head" "approve login"}}
<h1 id="title">Approve this SSH login?</h1>
<table>
<tr><th>Who</th><td id="caller">{{.CallerName}}</td></tr>
<tr><th>Owner</th><td id="owner">{{.Caller.Owner}}</td></tr>
<tr><th>From</th><td id="from"><code>{{.CallerAddr}}</code></td></tr>
<tr><th>To</th><td id="server">{{.Server}} <code>{{.ServerAddr}}</code></td></tr>
<tr><th>As local user</th><td id="local-user"><code>{{.LocalUser}}</code>{{if ne .User .LocalUser}} (asked for <code>{{.User}}</code>){{end}}</td></tr>
<tr><th>Rule</th><td id="rule"><code>{{.Rule}}</code>{{if .RulePos}} <span class="muted">{{.RulePos}}</span>{{end}}</td></tr>
</table>
<p>Approving lets this node log in as <code>{{.LocalUser}}</code> under this rule for {{.Period}} without asking again.</p>
{{if .Passkey}}
<p>This rule asks for a passkey of <code>{{.Caller.Owner}}</code>: approving takes a touch of your security key or your fingerprint.</p>
<button id="approve" type="button">Approve with a passkey</button>
<form method="post" style="display:inline">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button id="deny" type="submit" name="decision" value="deny">Deny</button>
</form>
<p id="status" role="status"></p>
{{if .Enrol}}<details id="enrol-box"{{if not .Enrolled}} open{{end}}><summary>Enrol a passkey</summary>
<p>{{if not .Enrolled}}No passkey is enrolled for <code>{{.Caller.Owner}}</code> yet. {{end}}Ask this server's admin for an enrolment code
(<code>sshmesh passkey invite --owner {{.Caller.Owner}}</code>) and enter it here:</p>
<input id="code" autocomplete="off" size="24"> <button id="enrol" type="button">Enrol a passkey</button>
</details>{{else if not .Enrolled}}<p class="muted">No passkey is enrolled for <code>{{.Caller.Owner}}</code>, and this server takes no enrolment codes: ask its admin.</p>{{end}}
<script nonce="{{.Nonce}}">
(function(){
const csrf = {{.CSRF}};
const base = location.pathname;
const status = document.getElementById("status");
const say = t => { status.textContent = t; };
const b64 = buf => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g,"-").replace(/\//g,"_").replace(/=+$/,"");
const unb64 = s => Uint8Array.from(atob(s.replace(/-/g,"+").replace(/_/g,"/")), c => c.charCodeAt(0));
async function call(path, body) {
  const r = await fetch(base + path, {method: "POST", headers: {"Content-Type": "application/json", "Sshmesh-Csrf": csrf}, body: JSON.stringify(body || {})});
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
  return j;
}
function done(j) {
  document.body.innerHTML = "";
  const h = document.createElement("h1"); h.id = "title"; h.textContent = j.title;
  const p = document.createElement("p"); p.id = "text"; p.textContent = j.text;
  document.body.append(h, p);
}
function cred(c) {
  const r = c.response, out = {id: c.id, rawId: b64(c.rawId), type: c.type, response: {clientDataJSON: b64(r.clientDataJSON)}};
  if (r.attestationObject) { out.response.attestationObject = b64(r.attestationObject); out.response.transports = r.getTransports ? r.getTransports() : []; }
  if (r.authenticatorData) { out.response.authenticatorData = b64(r.authenticatorData); out.response.signature = b64(r.signature); if (r.userHandle) out.response.userHandle = b64(r.userHandle); }
  return out;
}
if (!window.isSecureContext || !window.PublicKeyCredential) {
  say("Passkeys need this page on the local link that sshmesh nc printed (http://….localhost:…), in a browser with WebAuthn.");
  document.getElementById("approve").disabled = true;
  return;
}
document.getElementById("approve").onclick = async () => {
  try {
    say("Waiting for your passkey…");
    const o = await call("/passkey/begin");
    o.publicKey.challenge = unb64(o.publicKey.challenge);
    (o.publicKey.allowCredentials || []).forEach(c => c.id = unb64(c.id));
    const c = await navigator.credentials.get({publicKey: o.publicKey});
    done(await call("/passkey/finish", cred(c)));
  } catch (e) { say("Not approved: " + e.message); }
};
const enrol = document.getElementById("enrol");
if (enrol) enrol.onclick = async () => {
  try {
    say("Enrolling…");
    const o = await call("/enrol/begin", {code: document.getElementById("code").value});
    o.publicKey.challenge = unb64(o.publicKey.challenge);
    o.publicKey.user.id = unb64(o.publicKey.user.id);
    (o.publicKey.excludeCredentials || []).forEach(c => c.id = unb64(c.id));
    const c = await navigator.credentials.create({publicKey: o.publicKey});
    const j = await call("/enrol/finish", cred(c));
    say(j.text);
    document.getElementById("enrol-box").open = false;
  } catch (e) { say("Not enrolled: " + e.message); }
};
})();
</script>
{{else if .OIDC}}
<p>This rule asks you to sign in as <code>{{.Caller.Owner}}</code> at {{if .Issuer}}<code>{{.Issuer}}</code>{{else}}an identity provider, which this server does not have configured{{end}}.</p>
<button id="approve" type="button"{{if not .Issuer}} disabled{{end}}>Sign in to approve</button>
<form method="post" style="display:inline">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button id="deny" type="submit" name="decision" value="deny">Deny</button>
</form>
<p id="status" role="status"></p>
<p id="signin" hidden>Open <a id="signin-link" target="_blank" rel="noopener noreferrer"></a> and enter the code <code id="user-code"></code>. The ssh login continues by itself once you have signed in.</p>
<script nonce="{{.Nonce}}">
(function(){
const csrf = {{.CSRF}};
document.getElementById("approve").onclick = async () => {
  const status = document.getElementById("status");
  try {
    const r = await fetch(location.pathname + "/oidc/start", {method: "POST", headers: {"Sshmesh-Csrf": csrf}});
    const j = await r.json();
    if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
    const a = document.getElementById("signin-link");
    a.href = j.verification_uri_complete || j.verification_uri;
    a.textContent = j.verification_uri;
    document.getElementById("user-code").textContent = j.user_code;
    document.getElementById("signin").hidden = false;
    status.textContent = "";
  } catch (e) { status.textContent = "Not started: " + e.message; }
};
})();
</script>
{{else}}
<form method="post">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button id="approve" type="submit" name="decision" value="approve">Approve</button>
<button id="deny" type="submit" name="decision" value="deny">Deny</button>
</form>
{{end}}
<p class="muted">You are {{.Visitor}}. The login waits {{.Remaining}} more.</p>
</body></html>{{end}}
`))
})
