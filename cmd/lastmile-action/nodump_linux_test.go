package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// hideEnvironment leaves the process non-dumpable (checked in a child
// process of this test binary: the setting is the whole process's).
func TestHideEnvironment(t *testing.T) {
	if os.Getenv("LASTMILE_TEST_HIDE_ENVIRONMENT") == "1" {
		err := hideEnvironment()
		v, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_GET_DUMPABLE, 0, 0)
		fmt.Printf("hide=%v dumpable=%d errno=%d\n", err, v, errno)
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHideEnvironment$")
	cmd.Env = append(os.Environ(), "LASTMILE_TEST_HIDE_ENVIRONMENT=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hide=<nil> dumpable=0 errno=0") {
		t.Errorf("child: %v\n%s", err, out)
	}
	// This process, which did not call it, is dumpable.
	if v, _, _ := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_GET_DUMPABLE, 0, 0); v != 1 {
		t.Errorf("the test process itself: dumpable=%d", v)
	}
}
