package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	tokenEnv = "STROEM__WORKER_TOKEN"
	// tokenFDEnv names the descriptor the token comes over after the
	// re-exec that took it out of the environment.
	tokenFDEnv = "STROEM_TOKEN_FD"
)

// hideToken keeps the worker token out of /proc/<pid>/environ, which a
// step running as the same user could read and un-mask by transforming
// the value. Removing a variable inside Go does not change that file: it
// is the memory the process was started with. So when the token came in
// the environment, the process re-executes itself once (same pid, same
// arguments) with the variable removed and the token on a pipe, and the
// new image takes it from there. It returns the token read from the pipe
// ("" when there was none), or an error when the re-exec failed (the
// worker then runs on with the token visible, and says so).
//
// It also marks the process not dumpable (PR_SET_DUMPABLE=0): a process
// of the same non-root user can then neither read its /proc files nor
// attach a debugger to it. (Root can; run steps as another user.)
func hideToken() (string, error) {
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	if fd := os.Getenv(tokenFDEnv); fd != "" {
		os.Unsetenv(tokenFDEnv)
		n, err := strconv.Atoi(fd)
		if err != nil {
			return "", fmt.Errorf("%s=%q is not a file descriptor", tokenFDEnv, fd)
		}
		f := os.NewFile(uintptr(n), "token")
		if f == nil {
			return "", fmt.Errorf("%s=%d is not open", tokenFDEnv, n)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, 64<<10))
		if err != nil {
			return "", fmt.Errorf("reading the worker token from fd %d: %w", n, err)
		}
		return string(data), nil
	}
	token, ok := os.LookupEnv(tokenEnv)
	if !ok || token == "" {
		return "", nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", fmt.Errorf("hiding the worker token: %w", err)
	}
	defer r.Close()
	// A token fits the pipe's buffer: write it all before the exec.
	if _, err := w.WriteString(token); err != nil {
		w.Close()
		return "", fmt.Errorf("hiding the worker token: %w", err)
	}
	w.Close()
	if _, err := unix.FcntlInt(r.Fd(), unix.F_SETFD, 0); err != nil {
		return "", fmt.Errorf("hiding the worker token: %w", err)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, tokenEnv+"=") })
	env = append(env, tokenFDEnv+"="+strconv.Itoa(int(r.Fd())))
	// The binary's own path, not /proc/self/exe: the process name (comm,
	// what ps and top show) is taken from the path executed.
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	err = syscall.Exec(exe, os.Args, env)
	return "", fmt.Errorf("hiding the worker token (re-executing %s): %w", exe, err)
}
