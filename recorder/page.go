package recorder

import (
	"cmp"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/policy"
)

// The page's files: the player from npm, unmodified (tools/npm-assets
// verifies them), and the page's own script.
//
//go:embed assets/npm/asciinema-player/dist/bundle/asciinema-player.min.js assets/npm/asciinema-player/dist/bundle/asciinema-player.css assets/play.js assets/page.css
var assets embed.FS

var assetFiles = map[string]struct{ path, ctype string }{
	"player.js":  {"assets/npm/asciinema-player/dist/bundle/asciinema-player.min.js", "text/javascript; charset=utf-8"},
	"player.css": {"assets/npm/asciinema-player/dist/bundle/asciinema-player.css", "text/css; charset=utf-8"},
	"play.js":    {"assets/play.js", "text/javascript; charset=utf-8"},
	"page.css":   {"assets/page.css", "text/css; charset=utf-8"},
}

// pageCSP allows only the page's own embedded files. The player compiles
// its terminal emulator from WebAssembly ('wasm-unsafe-eval', which does
// not allow eval of JavaScript) and sets inline styles on its elements.
const pageCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; " +
	"connect-src 'self'; img-src 'self' data:; font-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

type viewerConnKey struct{}

// ServePage serves the page that lists and plays the recordings on l (a
// mesh listener: the page decides who may view from the conn's peer)
// until Close. Only identities in Viewers may use it, and only with a Host
// header naming one of Addrs; every recording opened is logged.
func (s *Server) ServePage(l net.Listener) error {
	if s.Dir == "" {
		return errors.New("recorder: Server.Dir is required")
	}
	srv := &http.Server{
		Handler:           s.Page(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, viewerConnKey{}, c)
		},
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	if s.ls == nil {
		s.ls, s.conns = map[net.Listener]struct{}{}, map[net.Conn]*inbound{}
	}
	s.ls[l] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-s.closing()
		srv.Close()
	}()
	return srv.Serve(l)
}

// closing returns a channel closed by Close.
func (s *Server) closing() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closeCh == nil {
		s.closeCh = make(chan struct{})
		if s.closed {
			close(s.closeCh)
		}
	}
	return s.closeCh
}

// Page returns the page's handler; requests must come through ServePage's
// conns (the viewer's identity is the conn's mesh peer).
func (s *Server) Page() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.serveList)
	mux.HandleFunc("GET /play/{node}/{date}/{session}", s.servePlay)
	mux.HandleFunc("GET /cast/{node}/{date}/{session}", s.serveCast)
	mux.HandleFunc("GET /assets/{name}", serveAsset)
	return s.guard(mux)
}

// guard sets the security headers and lets through only viewers, on a
// Host that is one of the recorder's addresses, not sent cross-site.
func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", pageCSP)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !s.hostAllowed(r.Host) {
			http.Error(w, "this page answers only on the recorder's mesh addresses", http.StatusMisdirectedRequest)
			return
		}
		if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			http.Error(w, "cross-site requests are refused", http.StatusForbidden)
			return
		}
		v, ok := s.viewer(r)
		if !ok || !matches(v, s.Viewers) {
			s.logger().Warn("recordings page: visitor may not view", "peer", v.Key.String(), "node", v.Node, "owner", v.Owner, "path", r.URL.Path)
			http.Error(w, "you may not view recordings here", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)))
	})
}

type viewerKey struct{}

func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && slices.Contains(s.Addrs, a.Unmap())
}

// viewer returns the identity of the request's conn (see [Server.identify]).
func (s *Server) viewer(r *http.Request) (policy.Identity, bool) {
	c, _ := r.Context().Value(viewerConnKey{}).(net.Conn)
	p, ok := sshmesh.PeerOf(c)
	if !ok {
		return policy.Identity{}, false
	}
	id, named := s.identify(p)
	id.Key = p.Key
	return id, named
}

func serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := assetFiles[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(assets, a.path)
	if err != nil {
		http.Error(w, "missing asset", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.Write(b)
}

// entry is one recording in the list.
type entry struct {
	Meta
	Path string // node/date/session
}

// list returns the recordings, newest first, that pass the filters.
func (s *Server) list(node, user, date string) []entry {
	var out []entry
	nodes, _ := os.ReadDir(s.Dir)
	for _, n := range nodes {
		if !n.IsDir() || node != "" && n.Name() != node {
			continue
		}
		dates, _ := os.ReadDir(filepath.Join(s.Dir, n.Name()))
		for _, d := range dates {
			if !d.IsDir() || date != "" && d.Name() != date {
				continue
			}
			files, _ := filepath.Glob(filepath.Join(s.Dir, n.Name(), d.Name(), "*.json"))
			for _, f := range files {
				b, err := os.ReadFile(f)
				var m Meta
				if err != nil || json.Unmarshal(b, &m) != nil {
					continue
				}
				if user != "" && !strings.EqualFold(m.Claim.Owner, user) && m.Claim.Caller != user && m.Claim.User != user && m.Claim.LocalUser != user {
					continue
				}
				out = append(out, entry{Meta: m, Path: n.Name() + "/" + d.Name() + "/" + strings.TrimSuffix(filepath.Base(f), ".json")})
			}
		}
	}
	slices.SortFunc(out, func(a, b entry) int { return cmp.Or(b.Received.Compare(a.Received), strings.Compare(a.Path, b.Path)) })
	return out
}

// pageTmpl is parsed on first use, not at init: every sshmesh process links
// this package (serve streams recordings with it) but only a recorder
// serves its pages.
var pageTmpl = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("").Funcs(template.FuncMap{
		"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"dur":  func(s float64) string { return (time.Duration(s * float64(time.Second))).Round(time.Second).String() },
	}).Parse(`{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{.}}</title><link rel="stylesheet" href="/assets/page.css">{{end}}
{{define "list"}}{{template "head" "Recordings"}}</head><body>
<h1>Recordings</h1>
<form method="get" action="/"><label>Node <input name="node" value="{{.Node}}"></label> <label>User <input name="user" value="{{.User}}"></label> <label>Date <input name="date" value="{{.Date}}" placeholder="YYYY-MM-DD"></label> <button>Filter</button></form>
<table id="recordings"><thead><tr><th>When</th><th>Who</th><th>As</th><th>Node</th><th>Length</th><th>Command</th><th></th></tr></thead><tbody>
{{range .Entries}}<tr><td>{{when .Received}}</td><td>{{.Claim.Caller}}{{if .Claim.Owner}} ({{.Claim.Owner}}){{end}}</td><td>{{.Claim.LocalUser}}</td><td>{{.Node}}</td><td>{{dur .Duration}}{{if not .Complete}} (incomplete){{end}}</td><td>{{.Claim.Kind}}{{if .Claim.Command}}: <code>{{.Claim.Command}}</code>{{end}}</td><td><a class="play" href="/play/{{.Path}}">play</a></td></tr>
{{else}}<tr><td colspan="7">No recordings.</td></tr>{{end}}</tbody></table>
<p class="viewer">Viewing as {{.Viewer}}.</p></body></html>{{end}}
{{define "play"}}{{template "head" .Title}}<link rel="stylesheet" href="/assets/player.css"><script src="/assets/player.js"></script><script src="/assets/play.js"></script></head><body>
<p><a href="/">All recordings</a></p><h1>{{.Title}}</h1>
<div id="player" data-src="/cast/{{.Path}}"></div></body></html>{{end}}`))
})

func (s *Server) serveList(w http.ResponseWriter, r *http.Request) {
	v := r.Context().Value(viewerKey{}).(policy.Identity)
	q := r.URL.Query()
	node, user, date := q.Get("node"), q.Get("user"), q.Get("date")
	entries := s.list(node, user, date)
	s.logger().Info("recordings listed", "viewer", v.Name(), "owner", v.Owner, "peer", v.Key.String(), "count", len(entries))
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl().ExecuteTemplate(w, "list", map[string]any{"Entries": entries, "Node": node, "User": user, "Date": date, "Viewer": v.Name()})
}

// recordingPath returns the file of the request's recording, or "".
func (s *Server) recordingPath(r *http.Request) (string, string) {
	node, date, session := r.PathValue("node"), r.PathValue("date"), r.PathValue("session")
	if _, err := time.Parse("2006-01-02", date); err != nil || !validSession(node) || !validSession(session) {
		return "", ""
	}
	return filepath.Join(s.Dir, node, date, session+".cast"), node + "/" + date + "/" + session
}

func (s *Server) servePlay(w http.ResponseWriter, r *http.Request) {
	path, rel := s.recordingPath(r)
	if path == "" {
		http.NotFound(w, r)
		return
	}
	if _, err := os.Stat(path); err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl().ExecuteTemplate(w, "play", map[string]any{"Title": "Recording " + rel, "Path": rel})
}

func (s *Server) serveCast(w http.ResponseWriter, r *http.Request) {
	v := r.Context().Value(viewerKey{}).(policy.Identity)
	path, rel := s.recordingPath(r)
	if path == "" {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	s.logger().Info("recording viewed", "viewer", v.Name(), "owner", v.Owner, "peer", v.Key.String(), "recording", rel)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	http.ServeContent(w, r, "", time.Time{}, f)
}
