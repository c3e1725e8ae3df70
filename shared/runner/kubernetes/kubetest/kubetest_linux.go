package kubetest

import "syscall"

// sysProcAttr puts a child in its own process group, so stop can signal all
// of it, and kills it when the test binary dies (see spawn).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
