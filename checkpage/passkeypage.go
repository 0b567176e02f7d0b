package checkpage

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"

	"github.com/sshmesh/sshmesh/policy"
)

// The page's passkey API, under the check's own path (so an `sshmesh nc`
// local link forwards it and nothing else): POST .../passkey/begin and
// .../passkey/finish approve with a passkey; .../enrol/begin and
// .../enrol/finish enrol one with an invitation code. Each needs the page's
// CSRF token in the CSRFHeader header, an Origin of an `sshmesh nc` local
// link, and a visitor of the caller's owner (as the page itself).

// CSRFHeader carries the page's CSRF token on its passkey API calls.
const CSRFHeader = "Sshmesh-Csrf"

// ceremony is one WebAuthn ceremony under way on a pending check.
type ceremony struct {
	session webauthn.SessionData
	origin  string
	code    string // enrolment: the invitation code
}

type apiAnswer struct {
	Error string `json:"error,omitempty"`
	Title string `json:"title,omitempty"`
	Text  string `json:"text,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// apiLookup is lookup for the passkey API: the pending check, if the
// visitor may decide it, the CSRF token is right and the origin is a local
// link's; else it has answered with the error.
func (c *Checker) apiLookup(w http.ResponseWriter, r *http.Request) (*pending, policy.Identity, string, bool) {
	c.mu.Lock()
	p := c.byToken[r.PathValue("token")]
	c.mu.Unlock()
	if p == nil {
		w.Header().Set(StateHeader, "ended")
		writeJSON(w, http.StatusNotFound, apiAnswer{Error: "This check has ended."})
		return nil, policy.Identity{}, "", false
	}
	v, ok := c.visitor(r)
	if !ok || v.Owner == "" || v.Owner != p.info.Caller.Owner {
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "Only a node of the same owner as the node that asks may approve this login."})
		return nil, v, "", false
	}
	if got := r.Header.Get(CSRFHeader); subtle.ConstantTimeCompare([]byte(got), []byte(p.csrf)) != 1 {
		c.logger().Warn("check page: passkey call without the form token", "peer", v.Key.String(), "rule", p.info.Rule)
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "The form token is missing or wrong. Open the link from the ssh client again."})
		return nil, v, "", false
	}
	origin := r.Header.Get("Origin")
	if !linkOrigin(origin, p.linkHost) {
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "Passkeys work on the local link that `sshmesh nc` prints (http://" + p.linkHost + ":…), not here."})
		return nil, v, "", false
	}
	if c.passkeys == nil {
		writeJSON(w, http.StatusNotImplemented, apiAnswer{Error: "This server keeps no passkeys."})
		return nil, v, "", false
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	return p, v, origin, true
}

func (c *Checker) servePasskeyBegin(w http.ResponseWriter, r *http.Request) {
	p, _, origin, ok := c.apiLookup(w, r)
	if !ok {
		return
	}
	owner := p.info.Caller.Owner
	creds, err := c.passkeys.credentials(owner)
	if err != nil {
		c.logger().Error("check page: passkeys unreadable", "err", err)
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: "The server cannot read its passkeys."})
		return
	}
	if len(creds) == 0 {
		writeJSON(w, http.StatusConflict, apiAnswer{Error: "No passkey is enrolled for " + owner + " yet: enrol one below first."})
		return
	}
	rp, err := relyingParty(p.linkHost, origin)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: err.Error()})
		return
	}
	opts, session, err := rp.BeginLogin(passkeyUser{owner: owner, creds: creds})
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: err.Error()})
		return
	}
	c.mu.Lock()
	p.login = &ceremony{session: *session, origin: origin}
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, opts)
}

func (c *Checker) servePasskeyFinish(w http.ResponseWriter, r *http.Request) {
	p, v, origin, ok := c.apiLookup(w, r)
	if !ok {
		return
	}
	c.mu.Lock()
	cer := p.login
	p.login = nil // one try per challenge
	c.mu.Unlock()
	if cer == nil || cer.origin != origin {
		writeJSON(w, http.StatusBadRequest, apiAnswer{Error: "No passkey request is under way; try again."})
		return
	}
	owner := p.info.Caller.Owner
	creds, err := c.passkeys.credentials(owner)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: "The server cannot read its passkeys."})
		return
	}
	rp, err := relyingParty(p.linkHost, origin)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: err.Error()})
		return
	}
	cred, err := rp.FinishLogin(passkeyUser{owner: owner, creds: creds}, cer.session, r)
	if err != nil {
		c.logger().Warn("check page: passkey not accepted", "peer", v.Key.String(), "owner", owner, "rule", p.info.Rule, "err", errDetail(err))
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "The passkey was not accepted: it is not one enrolled for " + owner + "."})
		return
	}
	if cred.Authenticator.CloneWarning {
		c.logger().Warn("check page: passkey's signature counter went back; it may be cloned", "owner", owner)
	}
	if err := c.passkeys.used(owner, *cred); err != nil {
		c.logger().Warn("check page: passkey counter not saved", "err", err)
	}
	c.decide(w, p, v, stateApproved, true)
}

func (c *Checker) serveEnrolBegin(w http.ResponseWriter, r *http.Request) {
	p, v, origin, ok := c.apiLookup(w, r)
	if !ok {
		return
	}
	var req struct {
		Code string `json:"code"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiAnswer{Error: "Bad request."})
		return
	}
	owner := p.info.Caller.Owner
	if err := checkInvite(c.InviteDir, req.Code, owner, time.Now()); err != nil {
		c.logger().Warn("check page: enrolment refused", "peer", v.Key.String(), "owner", owner, "err", err)
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "Enrolment refused: " + err.Error() + "."})
		return
	}
	creds, err := c.passkeys.credentials(owner)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: "The server cannot read its passkeys."})
		return
	}
	rp, err := relyingParty(p.linkHost, origin)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: err.Error()})
		return
	}
	var exclude []protocol.CredentialDescriptor
	for _, cr := range creds {
		exclude = append(exclude, cr.Descriptor())
	}
	opts, session, err := rp.BeginRegistration(passkeyUser{owner: owner, creds: creds},
		webauthn.WithExclusions(exclude), webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementPreferred))
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: err.Error()})
		return
	}
	c.mu.Lock()
	p.enrol = &ceremony{session: *session, origin: origin, code: req.Code}
	c.mu.Unlock()
	writeJSON(w, http.StatusOK, opts)
}

func (c *Checker) serveEnrolFinish(w http.ResponseWriter, r *http.Request) {
	p, v, origin, ok := c.apiLookup(w, r)
	if !ok {
		return
	}
	c.mu.Lock()
	cer := p.enrol
	p.enrol = nil
	c.mu.Unlock()
	if cer == nil || cer.origin != origin {
		writeJSON(w, http.StatusBadRequest, apiAnswer{Error: "No enrolment is under way; try again."})
		return
	}
	owner := p.info.Caller.Owner
	rp, err := relyingParty(p.linkHost, origin)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: err.Error()})
		return
	}
	cred, err := rp.FinishRegistration(passkeyUser{owner: owner}, cer.session, r)
	if err != nil {
		c.logger().Warn("check page: passkey enrolment failed", "peer", v.Key.String(), "owner", owner, "err", errDetail(err))
		writeJSON(w, http.StatusBadRequest, apiAnswer{Error: "The passkey could not be enrolled."})
		return
	}
	// Use the code up first: of two racing enrolments, one wins.
	if err := checkInvite(c.InviteDir, cer.code, owner, time.Now()); err != nil {
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "Enrolment refused: " + err.Error() + "."})
		return
	}
	if err := useInvite(c.InviteDir, cer.code); err != nil {
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "Enrolment refused: the code was used already."})
		return
	}
	if err := c.passkeys.add(owner, *cred, time.Now()); err != nil {
		c.logger().Error("check page: passkey not saved", "owner", owner, "err", err)
		writeJSON(w, http.StatusInternalServerError, apiAnswer{Error: "The server could not save the passkey."})
		return
	}
	c.logger().Info("passkey enrolled", "owner", owner, "by_peer", v.Key.String(), "by_node", v.Node, "rule", p.info.Rule)
	writeJSON(w, http.StatusOK, apiAnswer{Title: "Passkey enrolled", Text: "Passkey enrolled for " + owner + ". Now approve the login with it."})
}

// errDetail is the library's detailed reason, for the log.
func errDetail(err error) string {
	if pe, ok := err.(*protocol.Error); ok && pe.DevInfo != "" {
		return pe.Error() + ": " + pe.DevInfo
	}
	return err.Error()
}
