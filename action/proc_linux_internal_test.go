//go:build linux

package action

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// descendantsOutside searches from a root only while it is the process it
// was (its start time): a pid reused by another process leads nowhere.
func TestDescendantsOutsideChecksTheRoots(t *testing.T) {
	cmd := exec.Command("bash", "-c", "setsid sleep 60 & wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		for pid := range descendantsOutside(map[int]uint64{cmd.Process.Pid: 0}, cmd.Process.Pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = cmd.Wait()
	})
	root := cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var found map[int]uint64
	for found = descendantsOutside(map[int]uint64{root: 0}, root); len(found) == 0; found = descendantsOutside(map[int]uint64{root: 0}, root) {
		select {
		case <-ctx.Done():
			t.Fatal("the setsid child never showed up")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if len(found) != 1 {
		t.Fatalf("found %v, want the one setsid child", found)
	}
	start, ok := processStart(root)
	if !ok {
		t.Fatal("no start time for the shell")
	}
	if got := descendantsOutside(map[int]uint64{root: start}, root); len(got) != 1 {
		t.Errorf("root with its own start time: found %v, want the child", got)
	}
	if got := descendantsOutside(map[int]uint64{root: start + 1}, root); len(got) != 0 {
		t.Errorf("root with another start time (a reused pid): found %v, want nothing", got)
	}
}
