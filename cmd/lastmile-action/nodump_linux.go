package main

import "syscall"

// hideEnvironment makes the process non-dumpable: its /proc files (environ,
// where the runner put the token as INPUT_TOKEN, and mem) are then closed to
// other processes of the same user — the deploy command it runs among them.
// A process with root (sudo is there on GitHub-hosted runners) still reads
// them: this narrows the token's exposure, it does not sandbox the command.
func hideEnvironment() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
