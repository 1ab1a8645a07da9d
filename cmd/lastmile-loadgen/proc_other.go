//go:build !linux

package main

import "os/exec"

// dieWithParent does nothing where the kernel has no parent-death signal.
// Should the load generator be killed outright (SIGKILL), the baseline
// still stops when its stdin closes, or at its -lifetime; lastmile serve
// goes on until it is stopped by hand. The benchmark's figures are
// measured on Linux (its CPU and memory figures come from /proc).
func dieWithParent(*exec.Cmd) {}
