package app

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file runs the real lastmile binary, for the tests that kill it.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// lastmileBinary builds cmd/lastmile once per test run.
func lastmileBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lastmile-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "lastmile")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "../cmd/lastmile")...)
		cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a running `lastmile serve`.
type proc struct {
	cmd  *exec.Cmd
	addr string
	logs *logTail
	done chan error
}

// logTail keeps the last lines a process logged, for failure messages.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

func (l *logTail) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
	if len(l.lines) > 200 {
		l.lines = l.lines[len(l.lines)-200:]
	}
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// startServe starts `lastmile serve` with env and waits until it listens.
func startServe(t *testing.T, env []string) *proc {
	t.Helper()
	cmd := exec.Command(lastmileBinary(t), "serve")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LASTMILE_LISTEN=127.0.0.1:0", "LASTMILE_LOG_LEVEL=info"}, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &logTail{}, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.logs.add(line)
			var entry struct {
				Msg    string `json:"msg"`
				Listen string `json:"listen"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "lastmile starting" {
				select {
				case ready <- entry.Listen:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.done <- cmd.Wait()
	}()
	select {
	case p.addr = <-ready:
	case err := <-p.done:
		t.Fatalf("lastmile exited before listening: %v\n%s", err, p.logs)
	case <-time.After(60 * time.Second):
		p.kill()
		t.Fatalf("lastmile did not start listening\n%s", p.logs)
	}
	t.Cleanup(func() { p.kill() })
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
	}
}
