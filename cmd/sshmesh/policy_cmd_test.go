package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshmesh/sshmesh/meshkey"
)

// writePolicy writes a small document with fresh keys and returns its path.
func writePolicy(t *testing.T, edit func(string) string) string {
	t.Helper()
	doc := `{
  "nodes": {
    "lap": {"key": "KEY1", "owner": "ann@example.com"},
    "srv": {"key": "KEY2", "tags": ["tag:server"]},
  },
  "tagOwners": {"tag:server": ["ann@example.com"]},
  "ssh": [
    {"action": "reject", "src": ["*"], "dst": ["srv"], "users": ["root"], "message": "no root"},
    {"action": "accept", "src": ["ann@example.com"], "dst": ["tag:server"], "users": ["autogroup:nonroot"]},
  ],
  "tests": [{"src": "lap", "dst": "srv", "accept": ["deploy"], "deny": ["root"]}],
}`
	for i, name := range []string{"KEY1", "KEY2"} {
		var k meshkey.Public
		k[0] = byte(i + 1)
		doc = strings.ReplaceAll(doc, name, k.String())
	}
	if edit != nil {
		doc = edit(doc)
	}
	path := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCLI runs sshmesh with args in process.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(context.Background(), args, stdio{strings.NewReader(""), &out, &errb})
	return code, out.String(), errb.String()
}

// cliCase is one run of the CLI and what it must print: substrings of
// stdout and stderr.
type cliCase struct {
	name     string
	args     []string
	code     int
	out, err []string
}

// runCLICases runs each case as a subtest.
func runCLICases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCLI(tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errs)
			}
			for _, w := range tt.out {
				if !strings.Contains(out, w) {
					t.Errorf("stdout %q does not contain %q", out, w)
				}
			}
			for _, w := range tt.err {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q does not contain %q", errs, w)
				}
			}
		})
	}
}

func TestPolicyCheck(t *testing.T) {
	ok := writePolicy(t, nil)
	runCLICases(t, []cliCase{
		{"good", []string{"policy", "check", ok}, 0, []string{ok + ": 2 nodes, 2 rules, 2 tests passed"}, nil},
		{"failing test and typo, all listed", []string{"policy", "check", writePolicy(t, func(s string) string {
			return strings.Replace(s, `"accept": ["deploy"], "deny": ["root"]`, `"accept": ["root"], "deny": ["deploy"]`, 1)
		})}, 1, nil, []string{
			`policy.hujson:11:53: tests[0]: lap → srv as root: want accept, got deny by ssh[0] (line 8)` + "\n",
			`policy.hujson:11:71: tests[0]: lap → srv as deploy: want deny, got accept by ssh[1] (line 9)` + "\n",
		}},
		{"unknown autogroup names the line", []string{"policy", "check", writePolicy(t, func(s string) string {
			return strings.Replace(s, "autogroup:nonroot", "autogroup:nonrot", 1)
		})}, 1, nil, []string{`policy.hujson:9:87: ssh[1].users[0]: unknown autogroup "autogroup:nonrot"`}},
		{"missing file", []string{"policy", "check", "/nonexistent/p.hujson"}, 1, nil, []string{"no such file"}},
		{"no file", []string{"policy", "check"}, 2, nil, []string{"usage: sshmesh policy check FILE"}},
		{"help", []string{"policy", "check", "--help"}, 0, nil, []string{"usage: sshmesh policy check FILE"}},
		{"policy help", []string{"policy", "--help"}, 0, nil, []string{"sshmesh policy explain FILE"}},
		{"unknown subcommand", []string{"policy", "lint"}, 2, nil, []string{`unknown subcommand "lint"`}},
	})
}

func TestPolicyExplain(t *testing.T) {
	path := writePolicy(t, nil)
	tests := []struct {
		name string
		args []string
		code int
		out  []string
	}{
		{"accept, flags after FILE", []string{"policy", "explain", path, "--src", "lap", "--dst", "srv", "--user", "deploy"}, 0, []string{
			"lap → srv as deploy: accept by ssh[1] (" + path + ":9)",
			"local user: deploy",
			`ssh[0] (` + path + `:8) reject: no match: users [root] do not include "deploy"`,
			"ssh[1] (" + path + ":9) accept: matched",
		}},
		{"reject, flags around FILE", []string{"policy", "explain", "--src=lap", path, "--dst", "srv", "-user", "root"}, 0, []string{
			"lap → srv as root: reject by ssh[0]",
			`message: "no root"`,
		}},
		{"no rule", []string{"policy", "explain", "--src", "srv", "--dst", "srv", "--user", "x", "--", path}, 0, []string{
			"srv → srv as x: reject (no rule matched: deny by default)",
			"ssh[1] (" + path + ":9) accept: no match: src [ann@example.com] does not include srv (tag:server)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := runCLI(tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tt.code, errs)
			}
			for _, w := range tt.out {
				if !strings.Contains(out, w) {
					t.Errorf("stdout:\n%s\ndoes not contain %q", out, w)
				}
			}
		})
	}
	for _, tt := range []struct {
		name string
		args []string
		code int
		err  string
	}{
		{"unknown node", []string{"policy", "explain", path, "--src", "nope", "--dst", "srv", "--user", "x"}, 1, `sshmesh policy: ` + path + `: no node named "nope"`},
		{"missing flags", []string{"policy", "explain", path, "--src", "lap"}, 2, "missing --dst, --user"},
		{"two files", []string{"policy", "explain", path, path, "--src", "lap", "--dst", "srv", "--user", "x"}, 2, "usage: sshmesh policy explain"},
		{"bad flag", []string{"policy", "explain", path, "--sauce", "lap"}, 2, "flag provided but not defined: -sauce"},
		{"help", []string{"policy", "explain", "--help"}, 0, "--dst as --user"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := runCLI(tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.err) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, errs, tt.code, tt.err)
			}
		})
	}
}

// TestPolicyExplainGrants: explain lists what an allowing rule grants
// beyond the login (forwarding, environment, recording, session cap), and
// nothing of it when the rule grants none.
func TestPolicyExplainGrants(t *testing.T) {
	plain := writePolicy(t, nil)
	granting := writePolicy(t, func(doc string) string {
		return strings.Replace(doc, `"users": ["autogroup:nonroot"]}`, `"users": ["autogroup:nonroot"],
      "sessionDuration": "8h", "acceptEnv": ["LANG", "LC_*"], "agentForward": true,
      "localForward": ["localhost:5432"], "remoteForward": ["localhost:8080"],
      "record": true, "onRecordingFailure": "fail-closed"}`, 1)
	})
	grants := []string{
		"sessions end after: 8h0m0s",
		"environment the client may set: LANG LC_*",
		"agent forwarding (ssh -A): allowed",
		"local forwarding (ssh -L, -D) to: localhost:5432",
		"remote forwarding (ssh -R) on: localhost:8080",
		"recorded: yes (fail-closed)",
	}
	code, out, errs := runCLI("policy", "explain", granting, "--src", "lap", "--dst", "srv", "--user", "deploy")
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, errs)
	}
	for _, w := range grants {
		if !strings.Contains(out, w) {
			t.Errorf("stdout:\n%s\ndoes not contain %q", out, w)
		}
	}
	_, out, _ = runCLI("policy", "explain", plain, "--src", "lap", "--dst", "srv", "--user", "deploy")
	for _, w := range grants {
		head, _, _ := strings.Cut(w, ":")
		if strings.Contains(out, head) {
			t.Errorf("a rule granting nothing: stdout:\n%s\ncontains %q", out, head)
		}
	}
}

// TestPolicyTailnet: check and explain on a tailnet document (the example
// in testdata), with logins and tags for --src and --dst: no live tailnet.
func TestPolicyTailnet(t *testing.T) {
	example := filepath.Join("testdata", "tailnet-policy.hujson")
	data, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	write := func(edit func(string) string) string {
		path := filepath.Join(t.TempDir(), "tailnet.hujson")
		if err := os.WriteFile(path, []byte(edit(string(data))), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	nodes := write(func(s string) string {
		return strings.Replace(s, `"groups": {`, `"nodes": {"srv": {"key": "x", "tags": ["tag:server"]}}, "groups": {`, 1)
	})
	unsafe := write(func(s string) string {
		return strings.Replace(s, `"dst": ["autogroup:self"]`, `"dst": ["autogroup:self", "*"]`, 1)
	})
	failing := write(func(s string) string {
		return strings.Replace(s, `"deny": ["bob", "alice"]`, `"accept": ["bob"]`, 1)
	})
	runCLICases(t, []cliCase{
		{"check", []string{"policy", "check", example}, 0, []string{example + ": identities from a tailnet, 5 rules, 16 tests passed\n"}, nil},
		{"check: nodes in a tailnet document", []string{"policy", "check", nodes}, 1, nil, []string{
			nodes + `:9:3: nodes: a tailnet document has no "nodes"`}},
		{"check: the safety rule over identities", []string{"policy", "check", unsafe}, 1, nil, []string{
			unsafe + `:28:62: ssh[4].dst: accept rule with dst * would let autogroup:member into every person's untagged nodes`}},
		{"check: a failing test names the identities", []string{"policy", "check", failing}, 1, nil, []string{
			failing + `:35:71: tests[4]: bob@example.com → alice@example.com as bob: want accept, got deny (no rule matched)`}},
		{"explain: a login into a tag", []string{"policy", "explain", example, "--src", "alice@example.com", "--dst", "tag:server", "--user", "deploy"}, 0, []string{
			"alice@example.com → tag:server as deploy: accept by ssh[1] (" + example + ":20)",
			"local user: deploy",
			`ssh[0] (` + example + `:18) check: no match: users [root] do not include "deploy"`,
		}, nil},
		{"explain: root is a check", []string{"policy", "explain", example, "--src", "Alice@Example.com", "--dst", "tag:server", "--user", "root"}, 0, []string{
			"alice@example.com → tag:server as root: check by ssh[0]", "check: approval lasts 1h0m0s",
		}, nil},
		{"explain: several tags, refused with the message", []string{"policy", "explain", example, "--src", "tag:ci", "--dst", "tag:server,tag:ci", "--user", "alice"}, 0, []string{
			"tag:ci → tag:server,tag:ci as alice: reject by ssh[3]", `message: "servers are for group:ops; ask alice@example.com"`,
		}, nil},
		{"explain: someone else's device", []string{"policy", "explain", example, "--src", "bob@example.com", "--dst", "alice@example.com", "--user", "bob"}, 0, []string{
			"bob@example.com → alice@example.com as bob: reject (no rule matched: deny by default)",
			"dst [autogroup:self] does not include a node of alice@example.com; autogroup:self covers only nodes of bob@example.com",
		}, nil},
		{"explain: a node name", []string{"policy", "explain", example, "--src", "laptop", "--dst", "tag:server", "--user", "x"}, 1, nil, []string{
			`sshmesh policy: ` + example + `: caller: "laptop" is not a login (user@domain) or tags (tag:a or tag:a,tag:b); a tailnet document names no nodes`}},
		{"explain help names the tailnet forms", []string{"policy", "explain", "--help"}, 0, nil, []string{"a login\n(alice@example.com: an untagged node of that user) or tags"}},
	})
}
