package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

func TestRun(t *testing.T) {
	key := filepath.Join(t.TempDir(), "app.pem")
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	var repos int
	err := run(ctx, []string{"-webhook-secret", "x", "-key-out", key, "-repo", "acme/a,acme/b"}, &out, func(s *simulator.Simulator) {
		repos = len(s.Runs("acme/a")) + len(s.Runs("acme/b"))
		cancel()
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "api http://127.0.0.1:") || repos != 0 {
		t.Errorf("output %q", out.String())
	}
	if b, err := os.ReadFile(key); err != nil || !bytes.HasPrefix(b, []byte("-----BEGIN RSA PRIVATE KEY-----")) {
		t.Errorf("key file: %v", err)
	}
	if err := run(context.Background(), nil, &out, nil); err == nil {
		t.Error("ran without a secret")
	}
}
