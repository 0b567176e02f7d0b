package sshmeshtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// OIDCProvider is a minimal OpenID provider with the device authorization
// grant (RFC 8628), on loopback, for tests of check mode's "oidc" proof:
// discovery, JWKS, device authorization and token endpoints, ID tokens
// signed with ES256 for any client. It is written here because the
// well-kept Go test providers (oauth2-proxy/mockoidc) have no device grant.
// The person signing in is played by SignIn.
type OIDCProvider struct {
	// URL is the issuer.
	URL string

	srv *httptest.Server
	key *ecdsa.PrivateKey

	mu     sync.Mutex
	n      int
	grants map[string]*oidcGrant // by device code
}

type oidcGrant struct {
	userCode string
	email    string // "" until signed in
	verified bool
}

// NewOIDCProvider starts a provider that stops with the test.
func NewOIDCProvider(t testing.TB) *OIDCProvider {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &OIDCProvider{key: key, grants: map[string]*oidcGrant{}}
	mux := http.NewServeMux()
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	u := p.srv.URL
	p.URL = u
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": u, "jwks_uri": u + "/jwks", "token_endpoint": u + "/token", "authorization_endpoint": u + "/auth",
			"device_authorization_endpoint": u + "/device", "id_token_signing_alg_values_supported": []string{"ES256"},
			"response_types_supported": []string{"code"}, "subject_types_supported": []string{"public"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("POST /device", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.n++
		dc, uc := fmt.Sprintf("device-%d", p.n), fmt.Sprintf("CODE-%04d", p.n)
		p.grants[dc] = &oidcGrant{userCode: uc}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"device_code": dc, "user_code": uc, "verification_uri": u + "/activate",
			"verification_uri_complete": u + "/activate?code=" + uc, "expires_in": 600, "interval": 1})
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		p.mu.Lock()
		g := p.grants[r.PostForm.Get("device_code")]
		p.mu.Unlock()
		switch {
		case r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code" || g == nil:
			w.WriteHeader(400)
			w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		case g.email == "":
			w.WriteHeader(400)
			w.Write([]byte(`{"error":"authorization_pending"}`))
			return
		}
		now := time.Now()
		claims, _ := json.Marshal(map[string]any{"iss": u, "aud": r.PostForm.Get("client_id"), "sub": "user-" + g.email,
			"email": g.email, "email_verified": g.verified, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		jws, err := signer.Sign(claims)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		idt, _ := jws.CompactSerialize()
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": idt})
	})
	return p
}

// SignIn plays the person who enters userCode at the provider and signs in
// as email (verified or not). It fails when no sign-in has that code.
func (p *OIDCProvider) SignIn(userCode, email string, verified bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, g := range p.grants {
		if g.userCode == userCode {
			g.email, g.verified = email, verified
			return nil
		}
	}
	return fmt.Errorf("no sign-in with code %s", userCode)
}
