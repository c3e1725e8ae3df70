package process

import (
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when the process was killed by a signal.
	Code int
	// Signal is the signal that killed the process, when Signaled.
	Signal   syscall.Signal
	Signaled bool
}

// String reads like os.ProcessState's: "exit status 3", "signal: killed".
func (s ExitStatus) String() string {
	if s.Signaled {
		return "signal: " + s.Signal.String()
	}
	return "exit status " + strconv.Itoa(s.Code)
}

func exitStatus(ps *os.ProcessState) ExitStatus {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		return ExitStatus{Code: -1, Signal: ws.Signal(), Signaled: true}
	}
	return ExitStatus{Code: ps.ExitCode()}
}

// SignalName is the conventional name of sig ("SIGKILL"), or "signal N"
// for a number without one.
func SignalName(sig syscall.Signal) string {
	if name := unix.SignalName(sig); name != "" {
		return name
	}
	return "signal " + strconv.Itoa(int(sig))
}
