package promtest

import "syscall"

// sysProcAttr makes the kernel kill Prometheus when the test binary dies
// (a panic or a -timeout exits without running Stop).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
