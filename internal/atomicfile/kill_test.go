package atomicfile_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sshmesh/sshmesh/internal/atomicfile"
)

// writerLoop is run in a child process (see TestKillDuringWrite): it
// rewrites the file forever with self-checking content, saying "ready" on
// stdout after the first write.
func writerLoop(path string) {
	for i := 0; ; i++ {
		if i == 1 {
			fmt.Println("ready")
		}
		body := bytes.Repeat([]byte(fmt.Sprintf("generation %d ", i)), 4096)
		sum := sha256.Sum256(body)
		if err := atomicfile.WriteFile(path, append(sum[:], body...), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

func TestMain(m *testing.M) {
	if p := os.Getenv("ATOMICFILE_WRITER"); p != "" {
		writerLoop(p)
	}
	os.Exit(m.Run())
}

// TestKillDuringWrite kills a process that keeps rewriting a file with
// kill -9 at random points: the file is always a whole old or new version,
// never a torn one (what host keys and the check-approval state rely on).
func TestKillDuringWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	kills := 0
	for kills < 30 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "ATOMICFILE_WRITER="+path)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a random point once the writer is rewriting the file.
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("writer: %q %v", line, err)
		}
		time.Sleep(time.Duration(rand.IntN(20000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		kills++
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < sha256.Size {
			t.Fatalf("after kill %d: torn file of %d bytes", kills, len(b))
		}
		if sum := sha256.Sum256(b[sha256.Size:]); !bytes.Equal(sum[:], b[:sha256.Size]) {
			t.Fatalf("after kill %d: torn file (checksum mismatch, %d bytes)", kills, len(b))
		}
	}
	// Leftover temp files are possible after kill -9, but the target is whole.
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("final file: %v %v", st, err)
	}
}
