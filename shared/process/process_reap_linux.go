package process

import (
	"context"
	"os"
	"time"
)

// Reap collects the zombies of unregistered children (orphans reparented
// here by EnableSubreaper that have since exited) every interval until ctx
// ends. Without it they stay zombies, holding a pid each, until the next
// Sweep. Live processes are left alone; killing them is Sweep's job.
func Reap(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ReapZombies()
		case <-ctx.Done():
			return
		}
	}
}

// ReapZombies reaps every unregistered child that is a zombie now and
// returns their pids.
func ReapZombies() []int {
	var zombies []int
	func() {
		registry.mu.Lock()
		defer registry.mu.Unlock()
		procs, err := scanProcs()
		if err != nil {
			return
		}
		self, mine := os.Getpid(), registeredPids()
		for _, p := range procs {
			if p.ppid == self && p.zombie() && !mine[p.pid] {
				zombies = append(zombies, p.pid)
			}
		}
	}()
	var reaped []int
	for _, pid := range zombies {
		// A zombie child of ours keeps its pid until we reap it, so
		// reaping it outside the lock cannot hit someone else.
		if reap(pid) {
			reaped = append(reaped, pid)
		}
	}
	return reaped
}
