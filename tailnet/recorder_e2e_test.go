package tailnet_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/internal/testkit"
	"github.com/sshmesh/sshmesh/meshkey"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/recorder"
	"github.com/sshmesh/sshmesh/tailnet"
)

// recordedPolicy records alice's sessions on tag:recorder, fail-closed.
const recordedPolicy = `{
  "identity": "tailnet",
  "tagOwners": {"tag:server": ["alice@example.com"], "tag:recorder": ["alice@example.com"]},
  "ssh": [{"action": "accept", "src": ["alice@example.com"], "dst": ["tag:server"], "users": ["ALICE"],
           "record": true, "recorders": ["tag:recorder"], "onRecordingFailure": "fail-closed"}],
}`

// TestTailnetRecorder: `sshmesh-tailnet recorder`, a node tagged
// tag:recorder, takes the recording of a stock ssh session on an sshmesh
// server tagged tag:server, whose rule names tag:recorder; it files it
// under the sender's name from the coordinator, not from the stream; it
// refuses a node its --senders do not name; its page lets in the login
// --viewers names and no one else.
func TestTailnetRecorder(t *testing.T) {
	tl := needTools(t)
	testkit.NeedBinary(t, "ssh", "openssh-client")
	aliceUser := testkit.NewUser(t, testkit.UserOptions{})
	hs := startHeadscale(t, tl)
	alice := hs.createUser("alice", "alice@example.com")

	recDir := t.TempDir()
	rec := startProgram(t, hs, "tag:recorder", `recorder on the tailnet .* on (\d+\.\d+\.\d+\.\d+)`,
		"recorder", "--tailnet", "--dir", recDir, "--hostname", "recorder",
		"--senders", "tag:server", "--viewers", "alice@example.com")

	// The sshmesh server, in process, streaming to tag:recorder.
	srvNode := joinTailnet(t, hs, "sshmesh-srv", hs.authKey(0, "tag:server"))
	doc, err := policy.Parse([]byte(strings.ReplaceAll(recordedPolicy, "ALICE", aliceUser.Name)), "recorded.hujson")
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	log := &testkit.Buffer{}
	srv := &sshmesh.Server{Policy: doc, HostKeys: []ssh.Signer{signer}, Logger: log.Logger(),
		Recorder: &recorder.Client{Dial: srvNode.Dial, Resolve: srvNode.RecorderResolver(recorder.DefaultPort), AckTimeout: 30 * time.Second}}
	ln, err := srvNode.Listen("tcp", ":22")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, sshmesh.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	host := srvNode.Addresses()[0].String()
	laptop := startTailscaled(t, tl, hs, "alice-laptop", hs.authKey(alice))
	// Another node of alice's, in process: a viewer by login, not a sender.
	aliceNode := joinTailnet(t, hs, "alice-tsnet", hs.authKey(alice))

	t.Run("a recorded session streams to the tailnet recorder", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		args := append(append(sshOptions(laptop), aliceUser.Name+"@"+host), "echo recorded-on-the-tailnet")
		out, err := exec.CommandContext(ctx, "ssh", args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "recorded-on-the-tailnet") {
			t.Fatalf("ssh: %v\n%s\nserver log:\n%s", err, out, log.String())
		}
		casts, _ := filepath.Glob(filepath.Join(recDir, "sshmesh-srv", "*", "*.cast"))
		if len(casts) != 1 {
			all, _ := filepath.Glob(filepath.Join(recDir, "*", "*", "*"))
			t.Fatalf("recordings under the sender's tailnet name: %q (all: %q); want one", casts, all)
		}
		// The server ends the stream after the client has its exit status.
		var meta recorder.Meta
		waitFor(t, 60*time.Second, "the recording to be complete", func() error {
			b, _ := os.ReadFile(strings.TrimSuffix(casts[0], ".cast") + ".json")
			if err := json.Unmarshal(b, &meta); err != nil {
				return err
			}
			if !meta.Complete {
				return errors.New("not complete")
			}
			return nil
		})
		var events strings.Builder
		f, err := os.Open(casts[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r, err := asciicast.NewReader(f)
		if err != nil {
			t.Fatalf("the recording: %v", err)
		}
		for {
			ev, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("the recording: %v", err)
				}
				break
			}
			if ev.Code == asciicast.Output {
				events.WriteString(ev.Data)
			}
		}
		if !strings.Contains(events.String(), "recorded-on-the-tailnet") {
			t.Errorf("the recording holds %q; want the session's output", events.String())
		}
		if want := selfKey(t, srvNode); meta.Node != "sshmesh-srv" || meta.Key != want {
			t.Errorf("meta: node %q key %s; want sshmesh-srv, %s (WhoIs)", meta.Node, meta.Key, want)
		}
	})

	t.Run("a node the recorder's senders do not name is refused", func(t *testing.T) {
		c := &recorder.Client{Dial: aliceNode.Dial, Resolve: aliceNode.RecorderResolver(recorder.DefaultPort), AckTimeout: 30 * time.Second}
		_, err := c.OpenRecording(context.Background(), sshmesh.RecordingInfo{
			Session:  "claims-to-be-the-server",
			Identity: sshmesh.Identity{Identity: policy.Identity{Node: "sshmesh-srv", Tags: []string{"tag:server"}}},
			Kind:     "shell", Start: time.Now(), Header: asciicast.Header{Width: 80, Height: 24},
			Decision: policy.Decision{Recorders: []string{"tag:recorder"}},
		})
		if err == nil || !strings.Contains(err.Error(), "may not send recordings") {
			t.Fatalf("OpenRecording from alice's node: %v; want refused", err)
		}
		if got, _ := filepath.Glob(filepath.Join(recDir, "*", "*", "claims-to-be-the-server*")); len(got) != 0 {
			t.Errorf("the refused stream left %q", got)
		}
	})

	t.Run("the page lets in the viewer's login only", func(t *testing.T) {
		for _, tc := range []struct {
			who  string
			node *tailnet.Node
			want int
		}{{"alice@example.com", aliceNode, http.StatusOK}, {"tag:server", srvNode, http.StatusForbidden}} {
			hc := &http.Client{Transport: &http.Transport{DialContext: tc.node.Dial}, Timeout: time.Minute}
			resp, err := hc.Get("http://" + rec.host + "/")
			if err != nil {
				t.Fatalf("GET the page as %s: %v", tc.who, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("the page as %s: %d; want %d", tc.who, resp.StatusCode, tc.want)
			}
			if tc.want == http.StatusOK && !strings.Contains(string(body), "sshmesh-srv") {
				t.Errorf("the page as %s does not list the recording from sshmesh-srv:\n%s", tc.who, body)
			}
		}
	})

	t.Run("fail-closed: with the recorder gone the login is refused", func(t *testing.T) {
		rec.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		args := append(append(sshOptions(laptop), aliceUser.Name+"@"+host), "echo should-not-run")
		out, err := exec.CommandContext(ctx, "ssh", args...).CombinedOutput()
		if err == nil || strings.Contains(string(out), "should-not-run") {
			t.Fatalf("ssh with the recorder stopped: %v\n%s; want refused", err, out)
		}
	})
}

// joinTailnet brings an in-process node up on hs, closed when the test ends.
func joinTailnet(t *testing.T, hs *headscale, name, authKey string) *tailnet.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := tailnet.New(ctx, tailnet.Config{ControlURL: hs.URL, AuthKey: authKey, Dir: filepath.Join(t.TempDir(), "tsnet"), Hostname: name})
	if err != nil {
		t.Fatalf("joining %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// selfKey is the node's node key as a recorder's Meta spells it.
func selfKey(t *testing.T, n *tailnet.Node) string {
	st, err := n.LocalClient().StatusWithoutPeers(context.Background())
	if err != nil || st.Self == nil {
		t.Fatalf("status: %v", err)
	}
	return meshkey.Public(st.Self.PublicKey.Raw32()).String()
}
