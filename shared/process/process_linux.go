package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Spec is what to run.
type Spec struct {
	// Path is the program. A name without a slash is looked up in the PATH
	// of Env (or the worker's own PATH when Env has none); relative PATH
	// entries are skipped, as exec.LookPath refuses them.
	Path string
	// Args are the arguments, without argv[0] (which is Path).
	Args []string
	// Dir is the working directory; "" is the worker's.
	Dir string
	// Env is the whole environment; nil is the worker's.
	Env []string
	// Stdout and Stderr are write ends of pipes (or files) owned by the
	// caller. They are handed to the child as they are: no goroutine
	// copies from them, so Wait returns when the direct child exits even
	// if a grandchild still holds them open, which an io.Writer would not
	// allow. The caller closes its copies after Start and reads the other
	// ends. nil is /dev/null. Stdin is always /dev/null.
	Stdout, Stderr *os.File
	// DieWithParent has the kernel SIGKILL the process when the worker
	// dies (PR_SET_PDEATHSIG), so a worker killed with SIGKILL does not
	// leave its step running on. (The signal follows the thread that
	// forked, and Go ends no thread it did not lock; nothing here locks.)
	DieWithParent bool
}

// Process is a started step process, the leader of its own process group.
type Process struct {
	cmd  *exec.Cmd
	pgid int

	waitOnce sync.Once
	waited   chan struct{}
	status   ExitStatus
	waitErr  error
}

// Start starts spec's program in a new process group whose id is its pid.
// A program that cannot be run gives an error that says why (not found,
// not executable, a directory) and wraps the underlying *exec.Error or
// *fs.PathError.
func Start(spec Spec) (*Process, error) {
	if spec.Path == "" {
		return nil, errors.New("starting process: empty path")
	}
	path, err := LookPath(spec.Path, spec.Env)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.Path, err)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   append([]string{spec.Path}, spec.Args...),
		Dir:    spec.Dir,
		Env:    spec.Env,
		Stdout: fileOrNil(spec.Stdout),
		Stderr: fileOrNil(spec.Stderr),
		// Its own group, so the step and everything it forks can be
		// signalled at once with kill(-pgid) without touching the worker.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if spec.DieWithParent {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	if err := StartCmd(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.Path, explain(path, spec.Dir, err))
	}
	return &Process{cmd: cmd, pgid: cmd.Process.Pid, waited: make(chan struct{})}, nil
}

// fileOrNil keeps a nil *os.File from becoming a non-nil io.Writer, which
// os/exec would take for a file to hand over instead of /dev/null.
func fileOrNil(f *os.File) io.Writer {
	if f == nil {
		return nil
	}
	return f
}

// LookPath resolves a bare program name in the PATH of env, the
// environment the program gets, rather than the worker's (the worker's own
// when env is nil). Relative PATH entries are skipped.
func LookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if env == nil {
		return exec.LookPath(name)
	}
	var pathVar string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v // the last one wins, as in the child's getenv
		}
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if !filepath.IsAbs(dir) {
			continue
		}
		if p, err := exec.LookPath(filepath.Join(dir, name)); err == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

// explain turns the bare errno that exec reports for any failing step of
// starting a program into the reason a step author can act on.
func explain(path, dir string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if dir != "" {
			if _, serr := os.Stat(dir); serr != nil {
				return fmt.Errorf("working directory %s: %w", dir, serr)
			}
		}
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().IsRegular() {
			// The kernel found the file but not its #! interpreter.
			return fmt.Errorf("interpreter named on its #! line not found: %w", err)
		}
	case errors.Is(err, fs.ErrPermission):
		fi, serr := os.Stat(path)
		switch {
		case serr != nil:
		case fi.IsDir():
			return fmt.Errorf("is a directory: %w", err)
		case fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 == 0:
			return fmt.Errorf("file is not executable (mode %v): %w", fi.Mode().Perm(), err)
		}
	}
	return err
}

// Pid is the process id of the direct child, also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Wait waits for the direct child to exit and returns how it ended. The
// rest of its process group is not waited for (see Terminate and Sweep).
// It may be called more than once and from several goroutines. A non-zero
// exit or a signal is not an error; an error means the status is unknown.
func (p *Process) Wait() (ExitStatus, error) {
	p.waitOnce.Do(func() {
		defer close(p.waited)
		err := WaitCmd(p.cmd)
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			p.waitErr = fmt.Errorf("waiting for process %d: %w", p.Pid(), err)
			return
		}
		p.status = exitStatus(p.cmd.ProcessState)
	})
	return p.status, p.waitErr
}

// Signal sends sig to every process in the group. A group that is gone
// gives an error that matches syscall.ESRCH.
func (p *Process) Signal(sig syscall.Signal) error {
	if err := unix.Kill(-p.pgid, sig); err != nil {
		return fmt.Errorf("signalling process group %d with %s: %w", p.pgid, SignalName(sig), err)
	}
	return nil
}

// Terminate stops the whole group: it sends sig, waits up to grace for
// every process in the group to exit, then sends SIGKILL and waits for
// them to be gone. A process counts as gone once it is a zombie, so
// Terminate does not need Wait to run concurrently. If ctx ends first the
// group is SIGKILLed at once and ctx's error returned. A group that is
// already empty is not an error.
func (p *Process) Terminate(ctx context.Context, sig syscall.Signal, grace time.Duration) error {
	if err := unix.Kill(-p.pgid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("signalling process group %d with %s: %w", p.pgid, SignalName(sig), err)
	}
	graceCtx, cancel := context.WithTimeout(ctx, grace)
	err := p.waitGroupGone(graceCtx)
	cancel()
	if err == nil {
		return nil
	}
	if err := unix.Kill(-p.pgid, unix.SIGKILL); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("killing process group %d: %w", p.pgid, err)
	}
	if err := p.waitGroupGone(ctx); err != nil {
		return fmt.Errorf("waiting for process group %d to die: %w", p.pgid, err)
	}
	return nil
}

// waitGroupGone polls until the group has no live process. The poll backs
// off from a millisecond, so a group that dies at once is noticed at once
// and a stubborn one costs little; Wait reaping the leader wakes it early.
func (p *Process) waitGroupGone(ctx context.Context) error {
	delay := time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	waited := p.waited
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-waited:
			waited = nil // closed: wake once, then keep polling
		case <-t.C:
			delay = min(delay*2, 50*time.Millisecond)
			t.Reset(delay)
		}
		alive, err := groupAlive(p.pgid)
		if err != nil {
			return err
		}
		if !alive {
			return nil
		}
	}
}
