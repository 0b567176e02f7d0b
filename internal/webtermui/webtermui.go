// Package webtermui holds the web terminal's page: its template, script
// and style, and the xterm.js files from npm, unmodified (npm/, pinned in
// package.json and package-lock.json, listed in assets.txt and checked by
// tools/npm-assets verify). Everything is embedded: the page loads
// nothing from anywhere else.
package webtermui

import (
	"embed"
	"html/template"
	"sync"
)

//go:embed page/index.html page/app.js page/app.css
//go:embed npm/@xterm/xterm/lib/xterm.js npm/@xterm/xterm/css/xterm.css
//go:embed npm/@xterm/addon-fit/lib/addon-fit.js npm/@xterm/addon-unicode11/lib/addon-unicode11.js
//go:embed npm/@xterm/xterm/LICENSE npm/@xterm/addon-fit/LICENSE npm/@xterm/addon-unicode11/LICENSE
var files embed.FS

// Login is a login name the page offers, with what the policy decides.
type Login struct {
	Name      string // the login name
	LocalUser string // the local account it maps to
	Check     bool   // a check rule: the login waits for an approval
	Recorded  bool   // the rule records the session
}

// PageData is what the page shows.
type PageData struct {
	Visitor, VisitorAddr string // the visitor's node name (or key) and mesh address
	Owner, Tags          string // the visitor's owner, or its tags
	Node, NodeAddr       string // this node's name and the address the visitor reached
	Token                string // the page token for the WebSocket
	Logins               []Login
}

// Page returns the page's template, parsed on first use (not at init: every
// sshmesh process, a serve without the web terminal and an nc too, would
// pay for parsing it at start-up); execute it with a PageData.
var Page = sync.OnceValue(func() *template.Template {
	return template.Must(template.ParseFS(files, "page/index.html"))
})

// File is an embedded file served under /assets/.
type File struct {
	ContentType string
	Data        []byte
}

// assets maps the names under /assets/ to the embedded files.
var assets = map[string]string{
	"app.js":                  "page/app.js",
	"app.css":                 "page/app.css",
	"xterm.js":                "npm/@xterm/xterm/lib/xterm.js",
	"xterm.css":               "npm/@xterm/xterm/css/xterm.css",
	"addon-fit.js":            "npm/@xterm/addon-fit/lib/addon-fit.js",
	"addon-unicode11.js":      "npm/@xterm/addon-unicode11/lib/addon-unicode11.js",
	"LICENSE-xterm":           "npm/@xterm/xterm/LICENSE",
	"LICENSE-addon-fit":       "npm/@xterm/addon-fit/LICENSE",
	"LICENSE-addon-unicode11": "npm/@xterm/addon-unicode11/LICENSE",
}

// Asset returns the file served as /assets/name.
func Asset(name string) (File, bool) {
	p, ok := assets[name]
	if !ok {
		return File{}, false
	}
	b, err := files.ReadFile(p)
	if err != nil {
		return File{}, false
	}
	ct := "text/plain; charset=utf-8"
	switch {
	case len(p) > 3 && p[len(p)-3:] == ".js":
		ct = "text/javascript; charset=utf-8"
	case len(p) > 4 && p[len(p)-4:] == ".css":
		ct = "text/css; charset=utf-8"
	}
	return File{ContentType: ct, Data: b}, true
}
