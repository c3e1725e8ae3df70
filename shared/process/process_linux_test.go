package process_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/stroem-worker/stroem-worker/shared/process"
)

// The test binary plays every process the tests need: with roleEnv set it
// runs the role named by its first argument instead of the tests, and with
// isolatedEnv set it runs one test in a process of its own.
const (
	roleEnv     = "STROEM_PROCESS_TEST_ROLE"
	isolatedEnv = "STROEM_PROCESS_TEST_ISOLATED"
	readyFD     = 3 // where a grandchild reports readiness to its parent
)

// failBound only bounds a test that would otherwise hang; nothing waits
// for it to pass.
const failBound = 30 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) != "" {
		os.Exit(role(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// role runs a child process role and returns its exit code.
//
//	exit N                 exit with code N
//	sleep [ignore-term]    print "ready <pid>" on stdout and sleep until killed
//	spawn MODE [OPTS...]   start a grandchild ("sleep", with OPTS: setsid,
//	                       ignore-term) sharing stdout, print
//	                       "grandchild <pid>", then with MODE exit: exit 0,
//	                       with MODE stay: print "ready <pid>" and sleep
func role(args []string) int {
	switch args[0] {
	case "exit":
		n, _ := strconv.Atoi(args[1])
		return n
	case "sleep":
		if len(args) > 1 && args[1] == "ignore-term" {
			signal.Ignore(syscall.SIGTERM)
		}
		ready := os.Stdout
		if os.Getenv("STROEM_PROCESS_TEST_READY_FD") != "" {
			ready = os.NewFile(readyFD, "ready")
		}
		fmt.Fprintf(ready, "ready %d\n", os.Getpid())
		if ready != os.Stdout {
			ready.Close()
		}
		for {
			time.Sleep(time.Hour) // idles until killed; readiness was reported above
		}
	case "spawn":
		return spawn(args[1], args[2:])
	}
	fmt.Fprintf(os.Stderr, "unknown role %q\n", args)
	return 2
}

func spawn(mode string, opts []string) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cmd := exec.Command(exe, "sleep")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{w}
	cmd.Env = append(os.Environ(), "STROEM_PROCESS_TEST_READY_FD=1")
	for _, o := range opts {
		switch o {
		case "setsid":
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		case "ignore-term":
			cmd.Args = append(cmd.Args, "ignore-term")
		}
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	w.Close()
	// The grandchild has set itself up (setsid, signal disposition) once
	// it says so; only then may we exit and orphan it.
	if _, err := bufio.NewReader(r).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "grandchild readiness:", err)
		return 2
	}
	fmt.Printf("grandchild %d\n", cmd.Process.Pid)
	if mode == "exit" {
		return 0
	}
	fmt.Printf("ready %d\n", os.Getpid())
	for {
		time.Sleep(time.Hour) // idles until killed; readiness was reported above
	}
}

// child is a started role process and its stdout.
type child struct {
	*process.Process
	out *bufio.Reader
}

// start runs the test binary in role args, with stdout on a pipe the test
// reads; cleanup kills its group and waits for it.
func start(t *testing.T, args ...string) child {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// Bounds every read: a child that never reports fails the test
	// instead of hanging it.
	if err := r.SetReadDeadline(time.Now().Add(failBound)); err != nil {
		t.Fatal(err)
	}
	p, err := process.Start(process.Spec{
		Path:   exe(t),
		Args:   args,
		Env:    append(os.Environ(), roleEnv+"=1"),
		Stdout: w,
		Stderr: os.Stderr,
	})
	w.Close()
	if err != nil {
		r.Close()
		t.Fatalf("Start(%q) = %v", args, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failBound)
		defer cancel()
		if err := p.Terminate(ctx, syscall.SIGKILL, 0); err != nil {
			t.Errorf("cleanup: Terminate = %v", err)
		}
		if _, err := p.Wait(); err != nil {
			t.Errorf("cleanup: Wait = %v", err)
		}
		r.Close()
	})
	return child{Process: p, out: bufio.NewReader(r)}
}

// expect reads the next line, which must be "<word> <pid>", and returns pid.
func (c child) expect(t *testing.T, word string) int {
	t.Helper()
	line, err := c.out.ReadString('\n')
	if err != nil {
		t.Fatalf("reading %q line from child: %v", word, err)
	}
	got, pidText, _ := strings.Cut(strings.TrimSpace(line), " ")
	pid, err := strconv.Atoi(pidText)
	if got != word || err != nil {
		t.Fatalf("child said %q, want %q <pid>", line, word)
	}
	return pid
}

func exe(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func wait(t *testing.T, p *process.Process) process.ExitStatus {
	t.Helper()
	st, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait() = %v", err)
	}
	return st
}

// dead reports whether pid is gone or a zombie (its parent may be init,
// which reaps in its own time).
func dead(pid int) bool {
	st, err := process.State(pid)
	return errors.Is(err, fs.ErrNotExist) || (err == nil && st == 'Z')
}

// eventually polls cond until it holds or the failure bound passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(failBound)
	for delay := time.Millisecond; !cond(); delay = min(2*delay, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v", what, failBound)
		}
		time.Sleep(delay)
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	for _, code := range []int{0, 3, 255} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			t.Parallel()
			c := start(t, "exit", strconv.Itoa(code))
			got := wait(t, c.Process)
			if diff := cmp.Diff(process.ExitStatus{Code: code}, got); diff != "" {
				t.Errorf("Wait() mismatch (-want +got):\n%s", diff)
			}
			if want := "exit status " + strconv.Itoa(code); got.String() != want {
				t.Errorf("String() = %q, want %q", got.String(), want)
			}
		})
	}
}

func TestSignaled(t *testing.T) {
	t.Parallel()
	c := start(t, "sleep")
	if pid := c.expect(t, "ready"); pid != c.Pid() {
		t.Errorf("child pid = %d, Pid() = %d", pid, c.Pid())
	}
	if err := c.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("Signal(SIGKILL) = %v", err)
	}
	got := wait(t, c.Process)
	want := process.ExitStatus{Code: -1, Signal: syscall.SIGKILL, Signaled: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Wait() mismatch (-want +got):\n%s", diff)
	}
	if got.String() != "signal: killed" {
		t.Errorf("String() = %q, want %q", got.String(), "signal: killed")
	}
	if err := c.Signal(syscall.SIGTERM); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Signal() after exit = %v, want ESRCH", err)
	}
}

func TestSignalName(t *testing.T) {
	t.Parallel()
	for sig, want := range map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM", 200: "signal 200"} {
		if got := process.SignalName(sig); got != want {
			t.Errorf("SignalName(%d) = %q, want %q", sig, got, want)
		}
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	noExec := filepath.Join(dir, "script.sh")
	if err := os.WriteFile(noExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badShebang := filepath.Join(dir, "bad.sh")
	if err := os.WriteFile(badShebang, []byte("#!/no/such/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		spec   process.Spec
		is     error
		phrase string
	}{
		{"missing", process.Spec{Path: filepath.Join(dir, "missing")}, fs.ErrNotExist, "no such file"},
		{"not executable", process.Spec{Path: noExec}, fs.ErrPermission, "not executable"},
		{"directory", process.Spec{Path: dir}, fs.ErrPermission, "is a directory"},
		{"not in PATH", process.Spec{Path: "stroem-no-such-program", Env: []string{"PATH=" + dir}}, exec.ErrNotFound, "not found"},
		{"missing dir", process.Spec{Path: "/bin/sh", Dir: filepath.Join(dir, "nodir")}, fs.ErrNotExist, "working directory"},
		{"missing interpreter", process.Spec{Path: badShebang}, fs.ErrNotExist, "interpreter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := process.Start(tt.spec)
			if err == nil {
				p.Wait()
				t.Fatalf("Start(%+v) = nil error, want one", tt.spec)
			}
			t.Log(err)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.phrase) || !strings.Contains(err.Error(), tt.spec.Path) {
				t.Errorf("Start(%+v) = %q, want errors.Is %v, mentioning %q and the path", tt.spec, err, tt.is, tt.phrase)
			}
		})
	}
}

func TestStartLooksUpPathInEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Symlink(exe(t), filepath.Join(dir, "stroem-helper")); err != nil {
		t.Fatal(err)
	}
	p, err := process.Start(process.Spec{
		Path: "stroem-helper",
		Args: []string{"exit", "7"},
		Env:  append(os.Environ(), "PATH="+dir, roleEnv+"=1"),
	})
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	if got := wait(t, p); got.Code != 7 {
		t.Errorf("Wait() = %v, want exit status 7", got)
	}
}

func TestTerminate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		grace time.Duration
		want  syscall.Signal
	}{
		// A grace as long as the failure bound: Terminate returning nil
		// at all shows it did not wait it out.
		{"exits on SIGTERM", []string{"sleep"}, failBound, syscall.SIGTERM},
		{"ignores SIGTERM", []string{"sleep", "ignore-term"}, 100 * time.Millisecond, syscall.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, tt.args...)
			c.expect(t, "ready")
			ctx, cancel := context.WithTimeout(t.Context(), failBound)
			defer cancel()
			if err := c.Terminate(ctx, syscall.SIGTERM, tt.grace); err != nil {
				t.Fatalf("Terminate(SIGTERM, %v) = %v", tt.grace, err)
			}
			want := process.ExitStatus{Code: -1, Signal: tt.want, Signaled: true}
			if diff := cmp.Diff(want, wait(t, c.Process)); diff != "" {
				t.Errorf("Wait() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTerminateKillsGrandchildInGroup(t *testing.T) {
	t.Parallel()
	c := start(t, "spawn", "stay", "ignore-term")
	gpid := c.expect(t, "grandchild")
	c.expect(t, "ready")
	ctx, cancel := context.WithTimeout(t.Context(), failBound)
	defer cancel()
	if err := c.Terminate(ctx, syscall.SIGTERM, 100*time.Millisecond); err != nil {
		t.Fatalf("Terminate() = %v", err)
	}
	if st, err := process.State(gpid); !dead(gpid) {
		t.Errorf("grandchild %d after Terminate: state %q, %v; want dead", gpid, st, err)
	}
	if got := wait(t, c.Process); got.Signal != syscall.SIGTERM {
		t.Errorf("Wait() = %v, want signal: terminated", got)
	}
}

func TestWaitIgnoresGrandchildHoldingStdout(t *testing.T) {
	t.Parallel()
	c := start(t, "spawn", "exit")
	c.expect(t, "grandchild")
	// The grandchild still holds stdout open; Wait must not care.
	if got := wait(t, c.Process); got.Code != 0 || got.Signaled {
		t.Errorf("Wait() = %v, want exit status 0", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), failBound)
	defer cancel()
	if err := c.Terminate(ctx, syscall.SIGTERM, failBound); err != nil {
		t.Fatalf("Terminate() = %v", err)
	}
	// With the grandchild dead the pipe reaches EOF.
	if line, err := c.out.ReadString('\n'); err == nil {
		t.Errorf("read %q after the group died, want EOF", line)
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in              string
		pid, ppid, pgrp int
		state           byte
	}{
		{"42 (sh) S 1 42 42 0 -1 4194560\n", 42, 1, 42, 'S'},
		{"7 (a) b (c) Z 3 5 5 0\n", 7, 3, 5, 'Z'},
		{"9 (x)) R 2 9 9\n", 9, 2, 9, 'R'},
	}
	for _, tt := range tests {
		pid, ppid, pgrp, state, err := process.ParseStat([]byte(tt.in))
		if err != nil || pid != tt.pid || ppid != tt.ppid || pgrp != tt.pgrp || state != tt.state {
			t.Errorf("ParseStat(%q) = %d, %d, %d, %q, %v; want %d, %d, %d, %q", tt.in, pid, ppid, pgrp, state, err, tt.pid, tt.ppid, tt.pgrp, tt.state)
		}
	}
	for _, in := range []string{"", "1 (x", "1 (x) S", "x (y) S 1 2"} {
		if _, _, _, _, err := process.ParseStat([]byte(in)); err == nil {
			t.Errorf("ParseStat(%q) = nil error, want one", in)
		}
	}
}
