package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// reloadWorld is a node started from a wg-quick file and a policy, with
// the meshReload serve would run on SIGHUP, built as serve builds it.
type reloadWorld struct {
	dir, conf, pol string
	self           meshkey.Private
	peers          []meshkey.Public
	rl             *meshReload
	log            *sshmeshtest.Buffer
}

func newReloadWorld(t *testing.T) *reloadWorld {
	t.Helper()
	w := &reloadWorld{dir: t.TempDir()}
	w.conf, w.pol = filepath.Join(w.dir, "wg.conf"), filepath.Join(w.dir, "policy.hujson")
	var err error
	if w.self, err = meshkey.NewPrivate(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		k, err := meshkey.NewPrivate()
		if err != nil {
			t.Fatal(err)
		}
		w.peers = append(w.peers, k.Public())
	}
	w.writeConf(t, 0, 1, 2)
	w.writePolicy(t, "root")
	w.log = &sshmeshtest.Buffer{}
	w.rl = startTestReload(t, w.conf, w.pol, slog.New(slog.NewTextHandler(w.log, nil)))
	return w
}

// startReload brings up the node `sshmesh serve` starts on the wg-quick
// file conf and the policy pol, as serve does but on no UDP port, and
// returns the meshReload serve would run on SIGHUP, logging to logger. It
// knows the files' digests, as serve does from start-up: a reload applies
// only what changed after this call. The caller closes rl.node.
func startReload(conf, pol string, logger *slog.Logger) (*meshReload, error) {
	wgData, err := os.ReadFile(conf)
	if err != nil {
		return nil, err
	}
	cfg, _, err := netstack.ParseConfigBytes(wgData, conf)
	if err != nil {
		return nil, err
	}
	started := interfaceOf(cfg)
	cfg.ListenPort = 0
	node, err := netstack.New(cfg)
	if err != nil {
		return nil, err
	}
	policyData, err := os.ReadFile(pol)
	if err != nil {
		node.Close()
		return nil, err
	}
	doc, err := parsePolicy(policyData, pol, cfg.PrivateKey.Public())
	if err != nil {
		node.Close()
		return nil, err
	}
	r := &reloadable{}
	r.doc.Store(doc)
	return &meshReload{wgPath: conf, policyPath: pol, started: started, wgSum: digestWG(wgData), policySum: doc.Sum(),
		node: node, pol: r, srv: &sshmesh.Server{Policy: r}, logger: logger}, nil
}

// startTestReload is startReload whose node is closed when tb ends.
func startTestReload(tb testing.TB, conf, pol string, logger *slog.Logger) *meshReload {
	tb.Helper()
	rl, err := startReload(conf, pol, logger)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rl.node.Close() })
	return rl
}

// writeConf writes the wg-quick file with the peers of the given indexes
// (peer i at 100.64.1.i).
func (w *reloadWorld) writeConf(t *testing.T, peers ...int) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nAddress = 100.64.0.1/32\nListenPort = 0\n", w.self.Base64())
	for _, i := range peers {
		fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\nAllowedIPs = 100.64.1.%d/32\n", w.peers[i], i+1)
	}
	if err := os.WriteFile(w.conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writePolicy writes a policy whose one rule lets everyone in as users.
func (w *reloadWorld) writePolicy(t *testing.T, users string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "{\"nodes\": {\"self\": {\"key\": %q, \"tags\": [\"tag:s\"]},\n", w.self.Public())
	for i, k := range w.peers {
		fmt.Fprintf(&b, "\"p%d\": {\"key\": %q, \"owner\": \"a@example.com\"},\n", i, k)
	}
	fmt.Fprintf(&b, "}, \"tagOwners\": {\"tag:s\": []}, \"ssh\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"tag:s\"], \"users\": [%q]}]}\n", users)
	if err := os.WriteFile(w.pol, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (w *reloadWorld) peerKeys() []meshkey.Public {
	var out []meshkey.Public
	for _, p := range w.rl.node.Peers() {
		out = append(out, p.PublicKey)
	}
	return out
}

// TestReloadParsesOnlyWhatChanged: a reload applies a changed wg-quick
// file and keeps the very policy document when the policy's bytes did
// not change; a changed policy gets a new document and leaves the peers
// as they were; a bad file of either kind changes nothing, and the file
// is read again on the next reload once fixed.
func TestReloadParsesOnlyWhatChanged(t *testing.T) {
	w := newReloadWorld(t)
	doc0 := w.rl.pol.doc.Load()

	// Nothing changed: the same document, the same peers.
	if !w.rl.reload() {
		t.Fatalf("reload of unchanged files failed:\n%s", w.log)
	}
	if w.rl.pol.doc.Load() != doc0 {
		t.Error("an unchanged policy was parsed again (a new document)")
	}

	// One peer removed: applied; the policy document is the same one.
	w.writeConf(t, 0, 1)
	if !w.rl.reload() {
		t.Fatalf("reload failed:\n%s", w.log)
	}
	if got := w.peerKeys(); len(got) != 2 || got[0] != w.peers[0] || got[1] != w.peers[1] {
		t.Errorf("peers after removing one: %v, want the first two of %v", got, w.peers)
	}
	if w.rl.pol.doc.Load() != doc0 {
		t.Error("a peer change parsed the unchanged policy again")
	}
	if !strings.Contains(w.log.String(), "removed=1") {
		t.Errorf("the reload did not log the removed peer:\n%s", w.log)
	}

	// One rule changed: a new document; the peers stay.
	w.writePolicy(t, "deploy")
	if !w.rl.reload() {
		t.Fatalf("reload failed:\n%s", w.log)
	}
	doc1 := w.rl.pol.doc.Load()
	if doc1 == doc0 {
		t.Fatal("a changed policy was not applied")
	}
	if len(w.peerKeys()) != 2 {
		t.Errorf("a policy change changed the peers: %v", w.peerKeys())
	}

	// A bad policy with a changed peer file: neither applies.
	w.writeConf(t, 0, 1, 2)
	if err := os.WriteFile(w.pol, []byte("{nodes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w.rl.reload() {
		t.Fatal("a bad policy was applied")
	}
	if len(w.peerKeys()) != 2 || w.rl.pol.doc.Load() != doc1 {
		t.Errorf("a failed reload changed something: peers %v, new document %v", w.peerKeys(), w.rl.pol.doc.Load() != doc1)
	}

	// A bad peer file with an unchanged (fixed, same as applied) policy:
	// nothing applies.
	w.writePolicy(t, "deploy")
	if err := os.WriteFile(w.conf, []byte("[Peer]\nPublicKey = nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w.rl.reload() {
		t.Fatal("a bad wg-quick file was applied")
	}
	if len(w.peerKeys()) != 2 || w.rl.pol.doc.Load() != doc1 {
		t.Errorf("a failed reload changed something: peers %v", w.peerKeys())
	}

	// Fixed: the peer file the failed reloads did not apply is read again.
	w.writeConf(t, 0, 1, 2)
	if !w.rl.reload() {
		t.Fatalf("reload after the fix failed:\n%s", w.log)
	}
	if len(w.peerKeys()) != 3 {
		t.Errorf("peers after the fix: %v, want all three", w.peerKeys())
	}

	// A good peer change beside a bad policy fails; fixing only the
	// policy applies the peer change too.
	w.writeConf(t, 0, 1)
	if err := os.WriteFile(w.pol, []byte("{nodes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w.rl.reload() {
		t.Fatal("a bad policy was applied")
	}
	if len(w.peerKeys()) != 3 {
		t.Errorf("a failed reload changed the peers: %v", w.peerKeys())
	}
	w.writePolicy(t, "deploy")
	if !w.rl.reload() {
		t.Fatalf("reload after fixing the policy failed:\n%s", w.log)
	}
	if got := w.peerKeys(); len(got) != 2 {
		t.Errorf("peers after fixing only the policy: %v, want the peer change applied (two)", got)
	}
}

func TestHasEndpointNames(t *testing.T) {
	for _, tc := range []struct {
		conf string
		want bool
	}{
		{"[Peer]\nPublicKey = x\nAllowedIPs = 10.0.0.2/32\n", false},
		{"[Peer]\nEndpoint = 192.0.2.1:51820\n[Peer]\nendpoint=[2001:db8::1]:51820 # ok\n", false},
		{"[Peer]\nEndpoint = 192.0.2.1:51820\n[Peer]\n  ENDPOINT = vpn.example.com:51820\n", true},
		{"[Peer]\n# Endpoint = vpn.example.com:51820\n", false},
		{"[Peer]\r\nEndpoint = host:1\r\n", true},
		{"[Peer]\n\t\u00a0Endpoint = host:1\n", true}, // Unicode space before the key, as TrimSpace takes it
		{"[Peer]\nxEndpoint = host:1\n", false},
	} {
		if got := hasEndpointNames([]byte(tc.conf)); got != tc.want {
			t.Errorf("hasEndpointNames(%q) = %v, want %v", tc.conf, got, tc.want)
		}
	}
}

// TestScanWGFile: the streamed scan of a wg-quick file gives the digest
// of its bytes and says what hasEndpointNames says of them, also for a
// last line without a newline, lines longer than its buffer (which count
// as naming a host: the file is then parsed) and a file larger than it.
func TestScanWGFile(t *testing.T) {
	peers := strings.Repeat("[Peer]\nPublicKey = x\nAllowedIPs = 10.0.0.2/32\nEndpoint = 192.0.2.1:51820\n", 3000)
	for _, tc := range []struct {
		name, conf string
		want       bool
	}{
		{"empty", "", false},
		{"addresses", peers, false},
		{"a name at the end", peers + "[Peer]\nEndpoint = vpn.example.com:1", true},
		{"a name at the start", "[Peer]\nEndpoint = vpn.example.com:1\n" + peers, true},
		{"no newline at the end", peers + "[Peer]\nEndpoint = 192.0.2.9:1", false},
		{"a long comment line", peers + "# " + strings.Repeat("x", 200<<10) + "\n" + peers, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "wg.conf")
			if err := os.WriteFile(path, []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			sum, names, err := scanWGFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if sum != digestWG([]byte(tc.conf)) {
				t.Error("the digest is not the file's")
			}
			if sum == (wgDigest{}) || sum == digestWG([]byte(tc.conf+"\n")) {
				t.Error("the digest matches no file, or another file")
			}
			if names != tc.want {
				t.Errorf("names a host: %v, want %v", names, tc.want)
			}
		})
	}
	if _, _, err := scanWGFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file scanned without an error")
	}
}
