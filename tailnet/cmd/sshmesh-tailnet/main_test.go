package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMemoryLimitFlag: serve takes --memory-limit as `sshmesh serve` does
// (default auto), and refuses a bad value naming the flag before it joins
// any tailnet.
func TestMemoryLimitFlag(t *testing.T) {
	var help bytes.Buffer
	run(context.Background(), []string{"serve", "--help"}, &help, &help)
	if !strings.Contains(help.String(), "-memory-limit") || !strings.Contains(help.String(), `(default "auto")`) {
		t.Errorf("serve --help does not offer --memory-limit with default auto:\n%s", help.String())
	}
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(pol, []byte(`{"identity": "tailnet", "rules": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"serve", "--policy", pol, "--state", t.TempDir(), "--control-url", "http://127.0.0.1:1", "--memory-limit", "64MB"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("--memory-limit 64MB: %v; want an error naming the flag", err)
	}
}
