package process

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// EnableSubreaper makes the calling process a child subreaper
// (PR_SET_CHILD_SUBREAPER): processes orphaned below it, including ones
// that double-fork or setsid out of their step's process group, are
// reparented to it instead of to init, so Sweep can find them. It affects
// the whole process and is not inherited by children.
func EnableSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("becoming child subreaper: %w", err)
	}
	return nil
}

// sweepTimeout bounds how long Sweep waits for SIGKILLed processes to die;
// only a process stuck in uninterruptible sleep takes longer.
const sweepTimeout = 10 * time.Second

// Sweep SIGKILLs and reaps every child of this process that was not
// started with Start or StartCmd (orphans reparented here, which needs
// EnableSubreaper), and SIGKILLs what is left of the given process groups.
// It returns once none of them is alive, with the pids it sent SIGKILL to
// in the order it did; zombies it only reaped are not among them. Sweep
// never waits for a registered child, so it cannot steal Wait's status.
func Sweep(pgids ...int) ([]int, error) {
	self := os.Getpid()
	selfGroup := unix.Getpgrp()
	var errs []error
	groups := map[int]bool{}
	for _, g := range pgids {
		if g <= 1 || g == selfGroup {
			errs = append(errs, fmt.Errorf("sweeping process group %d: refusing to kill it", g))
			continue
		}
		groups[g] = true
	}
	if nothingToSweep(groups) {
		return nil, errors.Join(errs...)
	}
	var killed []int
	deadline := time.Now().Add(sweepTimeout)
	delay := time.Millisecond
	for {
		t, err := sweepTargets(self, groups)
		if err != nil {
			return killed, errors.Join(append(errs, err)...)
		}
		if len(t.reap) == 0 && len(t.kill) == 0 {
			return killed, errors.Join(errs...)
		}
		if time.Now().After(deadline) {
			errs = append(errs, fmt.Errorf("sweeping processes: still alive after SIGKILL: %v", t.pids()))
			return killed, errors.Join(errs...)
		}
		for _, k := range t.kill {
			// An orphan is our unreaped child, so its pid cannot have been
			// reused; a group is killed as a whole, catching members that
			// appeared since the scan.
			err := unix.Kill(k.target, unix.SIGKILL)
			switch {
			case err == nil && !slices.Contains(killed, k.pid):
				killed = append(killed, k.pid)
			case err != nil && !errors.Is(err, unix.ESRCH):
				errs = append(errs, fmt.Errorf("killing process %d: %w", k.pid, err))
				return killed, errors.Join(errs...)
			}
		}
		reaped := false
		for _, pid := range t.reap {
			reaped = reap(pid) || reaped
		}
		if reaped && len(t.kill) == 0 {
			continue // only zombies: rescan at once for what they left
		}
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
	}
}

type sweepKill struct{ pid, target int }

type sweepSet struct {
	reap []int       // unregistered children of ours, zombie or not
	kill []sweepKill // live processes, and what to send SIGKILL to
}

func (s sweepSet) pids() []int {
	var pids []int
	for _, k := range s.kill {
		pids = append(pids, k.pid)
	}
	return pids
}

// sweepTargets scans /proc under the registry lock, so no child can be
// between fork and registration while it decides what is an orphan.
func sweepTargets(self int, groups map[int]bool) (sweepSet, error) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	procs, err := scanProcs()
	if err != nil {
		return sweepSet{}, err
	}
	mine := registeredPids()
	var s sweepSet
	for _, p := range procs {
		if p.pid == self {
			continue
		}
		orphan := p.ppid == self && !mine[p.pid]
		if orphan {
			s.reap = append(s.reap, p.pid)
		}
		switch {
		case p.zombie():
		case groups[p.pgrp]:
			s.kill = append(s.kill, sweepKill{pid: p.pid, target: -p.pgrp})
		case orphan:
			s.kill = append(s.kill, sweepKill{pid: p.pid, target: p.pid})
		}
	}
	return s, nil
}

// reap collects pid if it has exited, without blocking, and reports
// whether it did. pid must be an unregistered child of ours.
func reap(pid int) bool {
	var ws unix.WaitStatus
	for {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err == nil && got == pid
	}
}

// nothingToSweep reports, without scanning /proc, that every group is gone
// and this process has no child but registered ones: the common case at
// the end of a step, which a full scan would make cost hundreds of system
// calls.
func nothingToSweep(groups map[int]bool) bool {
	for g := range groups {
		if err := unix.Kill(-g, 0); !errors.Is(err, unix.ESRCH) {
			return false
		}
	}
	// One system call answers the usual case: no child at all.
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WSTOPPED|unix.WCONTINUED|unix.WNOHANG|unix.WNOWAIT, nil)
	if errors.Is(err, unix.ECHILD) {
		return true
	}
	kids, ok := childPids()
	if !ok {
		return false
	}
	registry.mu.Lock()
	mine := registeredPids()
	registry.mu.Unlock()
	for _, pid := range kids {
		if !mine[pid] {
			return false
		}
	}
	return true
}
