package checkpage

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/sshmesh/sshmesh/policy"
)

// OIDC sends the person of a check through an organisation's identity
// provider, for rules with "checkProof": "oidc". It uses the OAuth 2.0
// device authorization grant (RFC 8628): the page shows the provider's
// address and a short code, the person signs in there in any browser, and
// the server learns the result from the provider directly, so no redirect
// address (which would have to reach this server, or the person's local
// link, whose port changes) needs registering. The ID token must carry
// "email_verified": true and an email equal to the caller's owner (case
// aside).
type OIDC struct {
	Issuer       string   // the provider's issuer URL (discovery at Issuer/.well-known/openid-configuration)
	ClientID     string   // this server's client at the provider (a public or confidential client with the device grant)
	ClientSecret string   // "" for a public client
	Scopes       []string // nil means openid and email

	// HTTPClient talks to the provider; nil means http.DefaultClient.
	HTTPClient *http.Client

	mu       sync.Mutex
	provider *oidc.Provider // discovered; nil until it worked
}

// setup discovers the provider, once it works (a failure is tried again at
// the next sign-in).
func (o *OIDC) setup(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return o.provider, nil
	}
	ctx, cancel := context.WithTimeout(o.ctx(ctx), 30*time.Second)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.Issuer)
	if err != nil {
		return nil, err
	}
	if p.Endpoint().DeviceAuthURL == "" {
		return nil, fmt.Errorf("%s offers no device authorization endpoint", o.Issuer)
	}
	o.provider = p
	return p, nil
}

func (o *OIDC) ctx(ctx context.Context) context.Context {
	if o.HTTPClient != nil {
		return oidc.ClientContext(ctx, o.HTTPClient)
	}
	return ctx
}

func (o *OIDC) config(p *oidc.Provider) *oauth2.Config {
	scopes := o.Scopes
	if scopes == nil {
		scopes = []string{oidc.ScopeOpenID, "email"}
	}
	return &oauth2.Config{ClientID: o.ClientID, ClientSecret: o.ClientSecret, Endpoint: p.Endpoint(), Scopes: scopes}
}

// oidcFlow is the device sign-in under way for a pending check.
type oidcFlow struct {
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete,omitempty"`
	UserCode                string `json:"user_code"`
	Error                   string `json:"error,omitempty"` // why the last sign-in did not approve
}

type oidcClaims struct {
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

// serveOIDCStart starts a device sign-in for the check (or returns the one
// under way) and answers with where and which code to enter.
func (c *Checker) serveOIDCStart(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	p := c.byToken[r.PathValue("token")]
	c.mu.Unlock()
	if p == nil {
		w.Header().Set(StateHeader, "ended")
		writeJSON(w, http.StatusNotFound, apiAnswer{Error: "This check has ended."})
		return
	}
	v, ok := c.visitor(r)
	if !ok || v.Owner == "" || v.Owner != p.info.Caller.Owner {
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "Only a node of the same owner as the node that asks may approve this login."})
		return
	}
	if got := r.Header.Get(CSRFHeader); subtle.ConstantTimeCompare([]byte(got), []byte(p.csrf)) != 1 {
		writeJSON(w, http.StatusForbidden, apiAnswer{Error: "The form token is missing or wrong. Open the link from the ssh client again."})
		return
	}
	if p.proof != policy.CheckProofOIDC || c.OIDC == nil {
		writeJSON(w, http.StatusConflict, apiAnswer{Error: "This login is not approved through an identity provider."})
		return
	}
	c.mu.Lock()
	if f := p.oidc; f != nil && f.Error == "" {
		flow := *f
		c.mu.Unlock()
		writeJSON(w, http.StatusOK, flow)
		return
	}
	c.mu.Unlock()
	prov, err := c.OIDC.setup(r.Context())
	if err != nil {
		c.logger().Error("check page: identity provider unusable", "issuer", c.OIDC.Issuer, "err", err)
		writeJSON(w, http.StatusBadGateway, apiAnswer{Error: "The identity provider cannot be reached."})
		return
	}
	cfg := c.OIDC.config(prov)
	// The sign-in lives as long as the check.
	ctx, cancel := context.WithDeadline(c.OIDC.ctx(context.Background()), p.expires)
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		cancel()
		c.logger().Error("check page: device authorization refused", "issuer", c.OIDC.Issuer, "err", err)
		writeJSON(w, http.StatusBadGateway, apiAnswer{Error: "The identity provider did not start a sign-in."})
		return
	}
	flow := &oidcFlow{VerificationURI: da.VerificationURI, VerificationURIComplete: da.VerificationURIComplete, UserCode: da.UserCode}
	answer := *flow // flow.Error changes under c.mu from here on
	c.mu.Lock()
	p.oidc = flow
	c.mu.Unlock()
	c.logger().Info("check: identity provider sign-in started", "issuer", c.OIDC.Issuer, "owner", p.info.Caller.Owner, "by_peer", v.Key.String(), "rule", p.info.Rule)
	go func() {
		defer cancel()
		go func() { // stop polling when the check ends
			select {
			case <-p.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		email, err := c.oidcSignIn(ctx, prov, cfg, da)
		owner := p.info.Caller.Owner
		if err == nil && !sameLogin(email, owner) {
			err = fmt.Errorf("signed in as %s, not as %s", email, owner)
		}
		if err != nil {
			c.logger().Warn("check: identity provider sign-in did not approve", "owner", owner, "rule", p.info.Rule, "err", err)
			c.mu.Lock()
			flow.Error = err.Error()
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		decided := c.finish(p, stateApproved)
		c.mu.Unlock()
		if decided {
			c.logger().Info("check approved", "peer", p.info.Caller.Key.String(), "node", p.info.CallerName, "local_user", p.key.LocalUser,
				"rule", p.info.Rule, "proof", p.proof, "issuer", c.OIDC.Issuer, "email", email, "period", p.period)
			c.save()
		}
	}()
	writeJSON(w, http.StatusOK, answer)
}

// oidcSignIn waits for the person to finish the device sign-in and returns
// the verified email of its ID token.
func (c *Checker) oidcSignIn(ctx context.Context, prov *oidc.Provider, cfg *oauth2.Config, da *oauth2.DeviceAuthResponse) (string, error) {
	tok, err := cfg.DeviceAccessToken(ctx, da)
	if err != nil {
		return "", err
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", errors.New("the provider sent no ID token")
	}
	idt, err := prov.Verifier(&oidc.Config{ClientID: cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return "", err
	}
	var cl oidcClaims
	if err := idt.Claims(&cl); err != nil {
		return "", err
	}
	if cl.Email == "" || !cl.EmailVerified {
		return "", fmt.Errorf("the ID token has no verified email (email %q, email_verified %v)", cl.Email, cl.EmailVerified)
	}
	return cl.Email, nil
}

// sameLogin reports whether two emails are the same ignoring ASCII case,
// and only that: Unicode case folding would let an email spelled with a
// look-alike (the Kelvin sign K folds to k) pass for another person's.
func sameLogin(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
