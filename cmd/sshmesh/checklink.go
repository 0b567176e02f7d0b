package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sshmesh/sshmesh/checkpage"
)

// localLink serves one pending check's approval page to this machine's
// browser: http://HOST:PORT/check/TOKEN on loopback, forwarded over this
// process's own mesh node to the page on the server, as this node. HOST is
// checkpage.LinkHost of the server's key, a name under .localhost, which
// browsers resolve to loopback. The browser needs no mesh of its own, the
// page is a secure context (which passkeys need), and its origin is the
// server's own (so its passkeys are bound to that server).
//
// It forwards only that check: the exact path /check/TOKEN and what lies
// under it (the page's own API), GET and POST only, and only requests whose
// Host names the link itself (a web page that rebinds a name of its own to
// 127.0.0.1 sends its own name, and is refused). On Linux only the user
// running this process may use it (the kernel says who owns the client's
// socket; see loopbackPeerUID), as with `sshmesh proxy`. It stops when the
// server says the check has ended, when the conn it is for ends, or on
// Close.
type localLink struct {
	URL string // http://HOST:PORT/check/TOKEN

	ln       []net.Listener
	srv      *http.Server
	prefix   string // /check/TOKEN
	hosts    map[string]bool
	owner    uint32
	logger   *slog.Logger
	stopOnce sync.Once
}

// startLocalLink starts the link, named host, for the approval page at
// pageURL (as checkpage.Notice.Validate accepts it), reached with dial.
func startLocalLink(pageURL, host string, dial func(ctx context.Context, network, address string) (net.Conn, error), logger *slog.Logger) (*localLink, error) {
	up, err := url.Parse(pageURL)
	if err != nil {
		return nil, err
	}
	upHost := up.Host
	if up.Port() == "" {
		upHost = net.JoinHostPort(up.Hostname(), "80")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("local approval link: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	l := &localLink{
		ln:     []net.Listener{ln},
		prefix: up.EscapedPath(),
		owner:  uint32(os.Getuid()),
		logger: logger,
		hosts:  map[string]bool{host + ":" + strconv.Itoa(port): true},
	}
	l.URL = "http://" + host + ":" + strconv.Itoa(port) + l.prefix
	// Browsers may try ::1 first for a .localhost name: serve it too when
	// the same port is free there (else they fall back to 127.0.0.1).
	if ln6, err := net.Listen("tcp", "[::1]:"+strconv.Itoa(port)); err == nil {
		l.ln = append(l.ln, ln6)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = upHost
			r.Out.Host = up.Host
			r.Out.Header.Del("Cookie")
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dial(ctx, network, upHost) // the page's address, whatever the request says
			},
			MaxIdleConns:          2,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
		},
		ModifyResponse: func(resp *http.Response) error {
			// The page says when its check has ended (or the token is
			// gone): the link has done its job then.
			if st := resp.Header.Get(checkpage.StateHeader); st != "" && st != "pending" {
				go l.Close()
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			logger.Warn("local approval link: the server's page did not answer", "err", err)
			http.Error(w, "sshmesh: the approval page on the server did not answer over the mesh: "+err.Error(), http.StatusBadGateway)
		},
	}
	l.srv = &http.Server{
		Handler:           l.guard(rp),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, linkConnKey{}, c)
		},
	}
	for _, ln := range l.ln {
		go l.srv.Serve(ln)
	}
	return l, nil
}

type linkConnKey struct{}

// guard lets through only this check's requests, from this user.
func (l *localLink) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.hosts[strings.ToLower(r.Host)] {
			l.logger.Warn("local approval link: request for another host refused", "host", r.Host)
			http.Error(w, "wrong host", http.StatusMisdirectedRequest)
			return
		}
		if peerUIDSupported {
			c, _ := r.Context().Value(linkConnKey{}).(net.Conn)
			uid, err := loopbackPeerUID(c)
			if err != nil || uid != l.owner {
				l.logger.Warn("local approval link: another local user's request refused", "uid", uid, "err", err)
				http.Error(w, "this link is for another local user", http.StatusForbidden)
				return
			}
		}
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if p := r.URL.EscapedPath(); p != l.prefix && !strings.HasPrefix(p, l.prefix+"/") || r.URL.RawQuery != "" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "null" {
			if u, err := url.Parse(o); err != nil || u.Scheme != "http" || !l.hosts[strings.ToLower(u.Host)] {
				http.Error(w, "cross-origin request refused", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Close stops the link (a second Close does nothing). Requests under way
// get a few seconds to finish, so the browser sees the page's last answer.
func (l *localLink) Close() error {
	l.stopOnce.Do(func() {
		for _, ln := range l.ln {
			ln.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			l.logger.Debug("local approval link: shutdown", "err", err)
		}
	})
	return nil
}
