package process_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stroem-worker/stroem-worker/shared/process"
)

// isolated runs the calling test again in a process of its own, because
// EnableSubreaper and Sweep act on the whole process: orphans of other
// tests would be reparented to it, and Sweep would kill the children of
// tests that start them without this package. It returns true in that
// process, where the test goes on; in the outer one it reports the inner
// result and returns false.
func isolated(t *testing.T) bool {
	t.Helper()
	if os.Getenv(isolatedEnv) == t.Name() {
		if err := process.EnableSubreaper(); err != nil {
			t.Fatalf("EnableSubreaper() = %v", err)
		}
		return true
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*failBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe(t), "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), isolatedEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("isolated %s: %v\n%s", t.Name(), err, out)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("isolated %s did not run:\n%s", t.Name(), out)
	}
	return false
}

func TestSweepKillsEscapedOrphan(t *testing.T) {
	t.Parallel()
	if !isolated(t) {
		return
	}
	c := start(t, "spawn", "exit", "setsid", "ignore-term")
	gpid := c.expect(t, "grandchild")
	if got := wait(t, c.Process); got.Code != 0 {
		t.Fatalf("Wait() = %v, want exit status 0", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), failBound)
	defer cancel()
	if err := c.Terminate(ctx, syscall.SIGTERM, time.Millisecond); err != nil {
		t.Fatalf("Terminate() = %v", err)
	}
	// The grandchild left the group with setsid, so Terminate missed it;
	// as a subreaper we inherited it.
	eventually(t, "escaped grandchild reparented to us", func() bool {
		return ppid(gpid) == os.Getpid()
	})

	// Children started by this package must survive a Sweep and keep
	// their exit status: one running, one exited and not yet waited for.
	running := start(t, "sleep")
	running.expect(t, "ready")
	exited := start(t, "exit", "5")
	eventually(t, "exited child is a zombie", func() bool {
		st, err := process.State(exited.Pid())
		return err == nil && st == 'Z'
	})

	killed, err := process.Sweep(c.Pid())
	if err != nil {
		t.Fatalf("Sweep() = %v", err)
	}
	if !slices.Equal(killed, []int{gpid}) {
		t.Errorf("Sweep() killed %v, want [%d]", killed, gpid)
	}
	if err := unix.Kill(gpid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("kill(%d, 0) after Sweep = %v, want ESRCH", gpid, err)
	}
	if got := wait(t, exited.Process); got.Code != 5 {
		t.Errorf("Wait() of the exited child after Sweep = %v, want exit status 5", got)
	}
	if err := running.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("running child after Sweep: Signal() = %v", err)
	}
	if got := wait(t, running.Process); got.Signal != syscall.SIGTERM {
		t.Errorf("Wait() of the running child = %v, want signal: terminated", got)
	}
}

func TestSweepKillsRestOfGroup(t *testing.T) {
	t.Parallel()
	if !isolated(t) {
		return
	}
	c := start(t, "spawn", "exit", "ignore-term")
	gpid := c.expect(t, "grandchild")
	wait(t, c.Process)
	killed, err := process.Sweep(c.Pid())
	if err != nil {
		t.Fatalf("Sweep() = %v", err)
	}
	if !slices.Equal(killed, []int{gpid}) {
		t.Errorf("Sweep() killed %v, want [%d]", killed, gpid)
	}
	if err := unix.Kill(gpid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("kill(%d, 0) after Sweep = %v, want ESRCH", gpid, err)
	}
	if killed, err := process.Sweep(c.Pid()); err != nil || len(killed) != 0 {
		t.Errorf("second Sweep() = %v, %v; want nothing to do", killed, err)
	}
}

func TestSweepRefusesOwnGroup(t *testing.T) {
	t.Parallel()
	if !isolated(t) {
		return
	}
	if _, err := process.Sweep(syscall.Getpgrp()); err == nil {
		t.Errorf("Sweep(own group) = nil error, want a refusal")
	}
}

func TestReapCollectsOrphanZombies(t *testing.T) {
	t.Parallel()
	if !isolated(t) {
		return
	}
	c := start(t, "spawn", "exit", "setsid")
	gpid := c.expect(t, "grandchild")
	wait(t, c.Process)
	eventually(t, "escaped grandchild reparented to us", func() bool {
		return ppid(gpid) == os.Getpid()
	})
	// A registered child that has exited is a zombie too, and not Reap's.
	exited := start(t, "exit", "4")
	eventually(t, "exited child is a zombie", func() bool {
		st, err := process.State(exited.Pid())
		return err == nil && st == 'Z'
	})

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { process.Reap(ctx, time.Millisecond) })
	defer func() { cancel(); wg.Wait() }()
	if err := unix.Kill(gpid, unix.SIGKILL); err != nil {
		t.Fatalf("killing grandchild: %v", err)
	}
	eventually(t, "orphan zombie reaped", func() bool {
		return errors.Is(unix.Kill(gpid, 0), unix.ESRCH)
	})
	cancel()
	wg.Wait()
	if got := wait(t, exited.Process); got.Code != 4 {
		t.Errorf("Wait() of the exited child after Reap = %v, want exit status 4", got)
	}
}

// ppid is pid's parent, or 0 when it cannot be read.
func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	_, pp, _, _, err := process.ParseStat(b)
	if err != nil {
		return 0
	}
	return pp
}

// Sweeping while children start and exit must never reap one of them:
// each Wait still sees its own exit code.
func TestSweepLeavesRegisteredChildren(t *testing.T) {
	t.Parallel()
	if !isolated(t) {
		return
	}
	ctx, cancel := context.WithCancel(t.Context())
	var sweeper sync.WaitGroup
	sweeper.Go(func() {
		for ctx.Err() == nil {
			if killed, err := process.Sweep(); err != nil || len(killed) > 0 {
				t.Errorf("Sweep() = %v, %v; want nothing to do", killed, err)
			}
		}
	})
	var children sync.WaitGroup
	for i := range 40 {
		children.Go(func() {
			p, err := process.Start(process.Spec{
				Path: exe(t),
				Args: []string{"exit", strconv.Itoa(i)},
				Env:  append(os.Environ(), roleEnv+"=1"),
			})
			if err != nil {
				t.Errorf("Start() = %v", err)
				return
			}
			if st, err := p.Wait(); err != nil || st.Code != i {
				t.Errorf("Wait() = %v, %v; want exit status %d", st, err, i)
			}
		})
	}
	children.Wait()
	cancel()
	sweeper.Wait()
}
