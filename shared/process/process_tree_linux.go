package process

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Handle names a step's process group for another process (the next run,
// a supervisor) that finds it left behind: the group id and its leader's
// start time, so that a reused pid is never mistaken for it.
type Handle struct {
	PGID  int    `json:"pgid"`
	Start uint64 `json:"start"`
}

// Handle returns the handle of p's group.
func (p *Process) Handle() (Handle, error) {
	info, err := readStat(p.pgid)
	if err != nil {
		return Handle{}, fmt.Errorf("reading start time of process %d: %w", p.pgid, err)
	}
	return Handle{PGID: p.pgid, Start: info.start}, nil
}

// KillGroup SIGKILLs what is left of the group h names and waits (up to
// ctx) until none of it is alive. It reports whether it found anything.
// While the leader lives, its start time must match h. Once it is dead the
// group can still be ours only: the kernel reuses no pid that is still a
// process group id.
func KillGroup(ctx context.Context, h Handle) (bool, error) {
	if h.PGID <= 1 || h.PGID == unix.Getpgrp() {
		return false, fmt.Errorf("killing process group %d: refusing to", h.PGID)
	}
	leader, err := readStat(h.PGID)
	switch {
	case err == nil && leader.start != h.Start && leader.pgrp == h.PGID:
		return false, nil // a new process group of a new process
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, err
	}
	alive, err := groupAlive(h.PGID)
	if err != nil || !alive {
		return false, err
	}
	if err := unix.Kill(-h.PGID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return true, fmt.Errorf("killing process group %d: %w", h.PGID, err)
	}
	delay := time.Millisecond
	for {
		alive, err := groupAlive(h.PGID)
		if err != nil || !alive {
			return true, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return true, fmt.Errorf("waiting for process group %d to die: %w", h.PGID, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// StopTree stops everything the step started: sig goes to its process
// group and to every orphan reparented to this process (escapees that
// left the group; see EnableSubreaper), then all of them get up to grace
// to exit, whether or not the leader has exited already, then whatever
// is left is SIGKILLed and reaped. If ctx ends first, the SIGKILL comes
// at once. It returns when none of them is alive.
func (p *Process) StopTree(ctx context.Context, sig unix.Signal, grace time.Duration) error {
	var errs []error
	if err := unix.Kill(-p.pgid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("signalling process group %d with %s: %w", p.pgid, SignalName(sig), err))
	}
	for _, pid := range liveOrphans() {
		_ = unix.Kill(pid, sig)
	}
	graceCtx, cancel := context.WithTimeout(ctx, grace)
	err := p.waitTreeGone(graceCtx)
	cancel()
	if err != nil {
		if _, err := Sweep(p.pgid); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitTreeGone polls until the group and the orphans are gone, with the
// same backoff as waitGroupGone.
func (p *Process) waitTreeGone(ctx context.Context) error {
	delay := time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		alive, err := groupAlive(p.pgid)
		if err != nil {
			return err
		}
		if !alive && len(liveOrphans()) == 0 {
			return nil
		}
		delay = min(delay*2, 50*time.Millisecond)
		t.Reset(delay)
	}
}

// liveOrphans lists this process's children that nobody waits for and
// that are not zombies: processes that escaped a step and were reparented
// here. Zombies among them are reaped on the way.
func liveOrphans() []int {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	procs, err := scanProcs()
	if err != nil {
		return nil
	}
	self, mine := os.Getpid(), registeredPids()
	var pids []int
	for _, pr := range procs {
		if pr.ppid != self || mine[pr.pid] {
			continue
		}
		if pr.zombie() {
			reap(pr.pid)
			continue
		}
		pids = append(pids, pr.pid)
	}
	return pids
}
