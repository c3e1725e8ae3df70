package process

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
)

// registry holds the children that someone is (or will be) waiting for
// through os/exec. Sweep and Reap reap every other child of ours by pid,
// so mu is held across fork and registration: a child that exits at once
// can never be seen unregistered, and its exit status stolen, in between.
var registry = struct {
	mu       sync.Mutex
	children map[*os.Process]int // -> pid, as Release may change p.Pid
}{children: map[*os.Process]int{}}

// StartCmd starts cmd like cmd.Start and registers it, so Sweep and Reap
// leave it alone until WaitCmd has reaped it. Children of this process that
// are started any other way look like orphans to Sweep and Reap.
func StartCmd(cmd *exec.Cmd) error {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	registry.children[cmd.Process] = cmd.Process.Pid
	return nil
}

// WaitCmd waits like cmd.Wait, then unregisters cmd's process. A command
// that was not started with StartCmd is only waited for.
func WaitCmd(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return fmt.Errorf("waiting for %s: not started", cmd.Path)
	}
	err := cmd.Wait()
	// Only now: until Wait returns, os/exec may still be reaping it.
	registry.mu.Lock()
	delete(registry.children, cmd.Process)
	registry.mu.Unlock()
	return err
}

// registeredPids is the set of registered pids; registry.mu must be held.
func registeredPids() map[int]bool {
	pids := make(map[int]bool, len(registry.children))
	for _, pid := range registry.children {
		pids[pid] = true
	}
	return pids
}
