//go:build !unix

package action

import (
	"os"
	"os/exec"
)

// Outside Unix (GitHub's Windows runners) there are no process groups to
// signal: the command itself is interrupted, then killed.

func setProcessGroup(*exec.Cmd) {}

func terminateGroup(cmd *exec.Cmd) { _ = cmd.Process.Signal(os.Interrupt) }

func killGroup(cmd *exec.Cmd) { _ = cmd.Process.Kill() }

func groupAlive(*exec.Cmd) bool { return false }
