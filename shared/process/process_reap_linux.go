package process

import (
	"context"
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
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
	// One system call answers the usual case, on every tick of an idle
	// worker: no child has exited (or there is no child at all), so there
	// is no zombie to look for.
	var info unix.Siginfo
	err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	if errors.Is(err, unix.ECHILD) || (err == nil && siginfoPid(&info) == 0) {
		return nil
	}
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

// siginfoPid is the si_pid of a siginfo waitid filled in: 0 when no child
// was in a waitable state. (x/sys/unix leaves the union opaque; si_pid is
// its first field, after si_signo, si_errno and si_code, aligned as a
// pointer: offset 16 on 64-bit Linux, 12 on 32-bit.)
func siginfoPid(info *unix.Siginfo) int32 {
	align := unsafe.Alignof(uintptr(0))
	off := (3*unsafe.Sizeof(int32(0)) + align - 1) / align * align
	return *(*int32)(unsafe.Add(unsafe.Pointer(info), off))
}
