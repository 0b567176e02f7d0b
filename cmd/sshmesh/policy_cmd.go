package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/sshmesh/sshmesh/policy"
)

// cmdPolicy implements `sshmesh policy check|explain`.
func cmdPolicy(ctx context.Context, args []string, io stdio) error {
	usage := func() {
		fmt.Fprint(io.err, `usage: sshmesh policy check FILE
       sshmesh policy explain FILE --src NODE --dst NODE --user NAME

  check    parse FILE, run its embedded tests, list every problem (exit 1)
  explain  show how FILE decides one login, rule by rule

In a tailnet document ("identity": "tailnet") NODE is a login
(alice@example.com) or tags (tag:ci, or tag:ci,tag:x).
`)
	}
	if len(args) == 0 {
		usage()
		return errUsage
	}
	switch args[0] {
	case "check":
		return cmdPolicyCheck(args[1:], io)
	case "explain":
		return cmdPolicyExplain(args[1:], io)
	case "-h", "-help", "--help", "help":
		usage()
		return flag.ErrHelp
	}
	fmt.Fprintf(io.err, "sshmesh policy: unknown subcommand %q\n", args[0])
	usage()
	return errUsage
}

// parseInterleaved parses flags that may come before or after the
// positional arguments (the flag package stops at the first non-flag).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil // everything after -- is positional
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// cmdPolicyCheck implements `sshmesh policy check FILE`.
func cmdPolicyCheck(args []string, io stdio) error {
	fs := newFlags("policy check", "FILE", io)
	fs.Usage = func() {
		fmt.Fprint(io.err, `usage: sshmesh policy check FILE

Parses the policy document FILE (HuJSON), checks it (unknown keys, undefined
names, the safety rule, ...) and runs its embedded tests. Prints a summary
and exits 0, or lists every problem as FILE:LINE:COL: FIELD: PROBLEM and
exits 1.
`)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	doc, err := policy.Load(pos[0])
	if err != nil {
		printErrors(io, err)
		return exitError(1)
	}
	nodes, rules, tests := doc.Stats()
	ran := "no tests"
	if tests > 0 {
		ran = plural(tests, "test") + " passed"
	}
	who := plural(nodes, "node")
	if doc.IdentitySource() == "tailnet" {
		who = "identities from a tailnet"
	}
	fmt.Fprintf(io.out, "%s: %s, %s, %s\n", pos[0], who, plural(rules, "rule"), ran)
	return nil
}

// printErrors writes each joined error on its own line.
func printErrors(io stdio, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printErrors(io, e)
		}
		return
	}
	fmt.Fprintln(io.err, err)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// cmdPolicyExplain implements `sshmesh policy explain FILE --src NODE --dst NODE --user NAME`.
func cmdPolicyExplain(args []string, io stdio) error {
	fs := newFlags("policy explain", "FILE --src NODE --dst NODE --user NAME", io)
	src := fs.String("src", "", "the calling node, by name; in a tailnet document a login or tags (required)")
	dst := fs.String("dst", "", "the node logged into, by name; in a tailnet document a login or tags (required)")
	user := fs.String("user", "", "the login name asked for, as in ssh NAME@host (required)")
	fs.Usage = func() {
		fmt.Fprint(io.err, `usage: sshmesh policy explain FILE --src NODE --dst NODE --user NAME

Shows how the policy document FILE decides a login from node --src into node
--dst as --user, now: the decision, the rule and line that made it, and why
each rule above it did not match. Exits 0 whatever the decision.

A tailnet document ("identity": "tailnet") names no nodes: give --src and
--dst as the tailnet's coordinator would name them, a login
(alice@example.com: an untagged node of that user) or tags (tag:ci, or
tag:ci,tag:x for a node with several). No live tailnet is needed.

`)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"--src", *src}, {"--dst", *dst}, {"--user", *user}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(pos) != 1 || len(missing) > 0 {
		if len(missing) > 0 {
			fmt.Fprintf(io.err, "sshmesh policy explain: missing %s\n", strings.Join(missing, ", "))
		}
		fs.Usage()
		return errUsage
	}
	doc, err := policy.Load(pos[0])
	if err != nil {
		printErrors(io, err)
		return exitError(1)
	}
	e, err := doc.Explain(*src, *dst, *user)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "policy: ")) // run adds "sshmesh policy: "
	}
	fmt.Fprint(io.out, e)
	return nil
}
