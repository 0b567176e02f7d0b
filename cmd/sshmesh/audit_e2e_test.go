package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/creack/pty"
	"github.com/google/go-cmp/cmp"

	"github.com/sshmesh/sshmesh"
	"github.com/sshmesh/sshmesh/asciicast"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/sshmeshtest"
)

// auditServer serves srv on a fresh mesh's first node with a JSON logger
// into the returned buffer, and returns the client's wg-quick file.
func auditServer(t *testing.T, srv *sshmesh.Server) (clientConf, serverAddr string, log *sshmeshtest.Buffer) {
	t.Helper()
	m := sshmeshtest.NewMesh(t, 2)
	server, client := m.Nodes[0], m.Nodes[1]
	client.Node.Close()
	log = &sshmeshtest.Buffer{}
	srv.Logger = slog.New(slog.NewJSONHandler(log, nil))
	sshmeshtest.Serve(t, server, srv)
	return client.WriteWGQuick(t, filepath.Join(t.TempDir(), "client.conf")), server.Addr.String(), log
}

// TestAuditEvents: one session through the stock client gives the events
// conn accepted → auth decision → session start → session end → conn
// closed, with the fixed keys and one id tying them together.
func TestAuditEvents(t *testing.T) {
	srv := &sshmesh.Server{
		Policy: policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
			return policy.Decision{Action: policy.Accept, LocalUser: "deploy", Rule: "ssh[1]", RulePos: "policy.hujson:9",
				Caller: policy.Identity{Node: "laptop", Owner: "ann@example.com"}}, nil
		}),
		Handler: sshmesh.HandlerFunc(func(s *sshmesh.Session) {
			s.Write([]byte("12345"))
			s.Exit(3)
		}),
	}
	conf, addr, log := auditServer(t, srv)
	if _, errOut, code := stockSSH(t, conf, "ann@"+addr, "deploy-now"); code != 3 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	log.WaitFor(t, `"msg":"conn closed"`)

	var got []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log.String()))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if strings.HasPrefix(ev["msg"].(string), "netstack") {
			continue
		}
		got = append(got, ev)
	}
	if len(got) == 0 {
		t.Fatal("no events")
	}
	conn, _ := got[0]["conn"].(string)
	peer, _ := got[0]["peer"].(string)
	for _, ev := range got {
		if ev["conn"] != conn {
			t.Errorf("event %q has conn %v, want %s", ev["msg"], ev["conn"], conn)
		}
		for _, k := range []string{"time", "addr", "duration_s"} {
			delete(ev, k)
		}
		if _, ok := ev["bytes_in"]; ok {
			ev["bytes_in"] = "n"
		}
	}
	sessionID := conn + "-1"
	want := []map[string]any{
		{"level": "INFO", "msg": "conn accepted", "conn": conn, "peer": peer, "node": "", "owner": ""},
		{"level": "INFO", "msg": "auth decision", "conn": conn, "peer": peer, "node": "laptop", "owner": "ann@example.com",
			"user": "ann", "local_user": "deploy", "action": "accept", "rule": "ssh[1]", "rule_pos": "policy.hujson:9", "message": ""},
		{"level": "INFO", "msg": "session start", "conn": conn, "session": sessionID, "peer": peer, "user": "ann", "local_user": "deploy",
			"kind": "exec", "command": "deploy-now", "pty": false, "term": "", "recorded": false},
		{"level": "INFO", "msg": "session end", "conn": conn, "session": sessionID, "peer": peer, "local_user": "deploy",
			"exit_status": float64(3), "bytes_in": "n", "bytes_out": float64(5)},
		{"level": "INFO", "msg": "conn closed", "conn": conn, "peer": peer, "user": "ann", "local_user": "deploy", "reason": "client disconnected"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func recordingRule(onFailure string) policy.Policy {
	return policy.Func(func(_ context.Context, r policy.Request) (policy.Decision, error) {
		return policy.Decision{Action: policy.Accept, LocalUser: r.User, Record: true, OnRecordingFailure: onFailure, Rule: "ssh[0]"}, nil
	})
}

// TestRecordingStockClient: a PTY session typing into a real shell, a
// non-PTY exec and an sftp session on a recorded rule are all recorded;
// asciinema reads the file; a fail-closed rule with an unwritable
// directory refuses the session with 254.
func TestRecordingStockClient(t *testing.T) {
	sshmeshtest.NeedRoot(t) // LoginHandler runs a real shell as root
	sftp := sshmeshtest.NeedBinary(t, "sftp", "openssh-client")
	asciinema := sshmeshtest.NeedBinary(t, "asciinema", "asciinema")
	dir := t.TempDir()
	conf, addr, _ := auditServer(t, &sshmesh.Server{Policy: recordingRule(""), RecordDir: dir})

	// A PTY session typing into a real shell.
	ssh := sshmeshtest.NeedBinary(t, "ssh", "openssh-client")
	cmd := exec.Command(ssh, append(append([]string{"-tt"}, meshClientOptions(conf)...), "root@"+addr)...)
	cmd.Stdin = strings.NewReader("echo rec-$((6*7))\nexit 0\n")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "rec-42") {
		t.Fatalf("ssh -tt: %v\n%s", err, out)
	}
	casts, _ := filepath.Glob(filepath.Join(dir, "*.cast"))
	if len(casts) != 1 {
		t.Fatalf("recordings %v", casts)
	}
	f, _ := os.Open(casts[0])
	r, err := asciicast.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.Header.Env["TERM"] == "" || r.Header.Env["SHELL"] == "" || r.Header.Timestamp == 0 {
		t.Errorf("header %+v", r.Header)
	}
	var out strings.Builder
	last := 0.0
	for {
		ev, err := r.Next()
		if err != nil {
			break
		}
		if ev.Time < last {
			t.Errorf("time goes back: %v after %v", ev.Time, last)
		}
		last = ev.Time
		if ev.Code == "o" {
			out.WriteString(ev.Data)
		}
	}
	f.Close()
	if !strings.Contains(out.String(), "rec-42") {
		t.Errorf("recording lacks the command's output: %q", out.String())
	}
	// asciinema wants a terminal of its own: give it a real PTY.
	catCmd := exec.Command(asciinema, "cat", casts[0])
	ptmx, err := pty.Start(catCmd)
	if err != nil {
		t.Fatal(err)
	}
	catOut, _ := io.ReadAll(ptmx) // ends with EIO when asciinema exits
	ptmx.Close()
	if err := catCmd.Wait(); err != nil || !strings.Contains(string(catOut), "rec-42") {
		t.Errorf("asciinema cat: %v\n%s", err, catOut)
	}

	// Without a PTY, and sftp: recorded too.
	if _, errOut, code := stockSSH(t, conf, "-T", "root@"+addr, "echo plain-exec"); code != 0 {
		t.Fatalf("ssh -T: %d %s", code, errOut)
	}
	sftpCmd := exec.Command(sftp, append(append([]string{"-b", "-"}, meshClientOptions(conf)...), "root@"+addr)...)
	sftpCmd.Stdin = strings.NewReader("pwd\n")
	if out, err := sftpCmd.CombinedOutput(); err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	casts, _ = filepath.Glob(filepath.Join(dir, "*.cast"))
	if len(casts) != 3 {
		t.Errorf("want 3 recordings (pty, exec, sftp), got %d", len(casts))
	}
	for _, c := range casts {
		b, _ := os.ReadFile(c)
		if strings.Count(string(b), "\n") < 2 {
			t.Errorf("%s has no events:\n%s", c, b)
		}
	}

	// fail-closed without a usable directory: refused with 254.
	conf2, addr2, _ := auditServer(t, &sshmesh.Server{Policy: recordingRule("fail-closed"), RecordDir: filepath.Join(dir, "missing")})
	if _, errOut, code := stockSSH(t, conf2, "root@"+addr2, "true"); code != 254 || !strings.Contains(errOut, "recording failed") {
		t.Errorf("fail-closed: exit %d, stderr %q", code, errOut)
	}
}
