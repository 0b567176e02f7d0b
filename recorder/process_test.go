package recorder_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/netstack"
	"github.com/sshmesh/sshmesh/policy"
	"github.com/sshmesh/sshmesh/recorder"
)

// The recorder in a process of its own, for BenchmarkRecordedBulk/remote-process:
// the recorder is on another node, whose CPU the server's does not
// share. The benchmark runs this test binary again with recorderChildEnv
// naming a directory that holds the node's wg-quick file (wg.conf) and
// the policy (policy.hujson); TestMain then runs recorderChild, which
// serves a recorder there until its stdin ends, instead of the tests.
const recorderChildEnv = "SSHMESH_RECORDER_BENCH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(recorderChildEnv); dir != "" {
		if err := recorderChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "recorder process:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func recorderChild(dir string) error {
	f, err := os.Open(filepath.Join(dir, "wg.conf"))
	if err != nil {
		return err
	}
	cfg, _, err := netstack.ParseConfig(f, "wg.conf")
	f.Close()
	if err != nil {
		return err
	}
	src, err := os.ReadFile(filepath.Join(dir, "policy.hujson"))
	if err != nil {
		return err
	}
	doc, err := policy.Parse(src, "policy.hujson")
	if err != nil {
		return err
	}
	node, err := netstack.New(cfg)
	if err != nil {
		return err
	}
	defer node.Close()
	ln, err := node.Listen("tcp", fmt.Sprintf(":%d", recorder.DefaultPort))
	if err != nil {
		return err
	}
	rec := &recorder.Server{Dir: filepath.Join(dir, "recordings"), Identify: doc.Node, Senders: []string{"tag:server"}, SyncInterval: 200 * time.Millisecond}
	go rec.Serve(ln)
	defer rec.Close()
	sink, err := node.Listen("tcp", fmt.Sprintf(":%d", discardPort))
	if err != nil {
		return err
	}
	go discard(sink)
	fmt.Println("recorder ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// discardPort is where the recorder process also reads and drops what
// it is sent (BenchmarkMeshStream: one mesh TCP stream alone).
const discardPort = recorder.DefaultPort + 1

func discard(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(io.Discard, c)
		}()
	}
}

// startRecorderProcess runs r's recorder node in a process of its own:
// it closes the in-process node (freeing its UDP port) and starts the
// child on the node's config.
func startRecorderProcess(tb testing.TB, r *rig, policySrc string) {
	tb.Helper()
	dir := tb.TempDir()
	r.recNd.Node.Close()
	r.recNd.WriteWGQuick(tb, filepath.Join(dir, "wg.conf"))
	if err := os.WriteFile(filepath.Join(dir, "policy.hujson"), []byte(policySrc), 0o600); err != nil {
		tb.Fatal(err)
	}
	r.recDir = filepath.Join(dir, "recordings")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), recorderChildEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "recorder ready") {
			go io.Copy(io.Discard, stdout)
			return
		}
	}
	tb.Fatal("the recorder process ended before it was ready")
}
