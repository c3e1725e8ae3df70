package dockertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// termGrace is how long the engine gets after SIGTERM. dockerd exits in
	// well under a second once its containers are gone; its own
	// --shutdown-timeout (3 s) bounds containers Stop could not remove.
	termGrace = 20 * time.Second
	// settleGrace is how long processes below the engine directory (the
	// managed containerd, shims) get to exit on their own after the engine
	// is gone, before they count as leftovers and are killed.
	settleGrace = 5 * time.Second
)

// Stop removes all containers, stops the engine (SIGTERM, then SIGKILL
// after a grace period), kills and reports any process still running from
// the engine directory, unmounts what is left mounted below it and removes
// it. It returns a *LeftoverError (joined with others) when the engine did
// not leave a clean machine on its own. Calling it again returns the first
// result.
func (e *Engine) Stop(ctx context.Context) error {
	e.stopOnce.Do(func() { e.stopErr = e.stop(ctx) })
	return e.stopErr
}

func (e *Engine) stop(ctx context.Context) error {
	var errs []error
	if e.api.version != "" && e.running() {
		rmCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := e.api.removeAllContainers(rmCtx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	e.api.hc.CloseIdleConnections()
	if err := e.terminate(ctx); err != nil {
		errs = append(errs, err)
	}
	var left LeftoverError
	left.Processes = killLeftovers(ctx, e.root)
	for _, mp := range unmountBelow(e.root) {
		if !slices.Contains(e.ownMounts, mp) {
			left.Mounts = append(left.Mounts, mp)
		}
	}
	if len(left.Processes) > 0 || len(left.Mounts) > 0 {
		errs = append(errs, &left)
	}
	if err := os.RemoveAll(e.root); err != nil {
		errs = append(errs, fmt.Errorf("removing engine directory: %w", err))
	}
	return errors.Join(errs...)
}

func (e *Engine) running() bool {
	if e.cmd == nil {
		return false
	}
	select {
	case <-e.exited:
		return false
	default:
		return true
	}
}

// terminate sends SIGTERM and waits for the engine process, then SIGKILLs
// it after termGrace or when ctx ends.
func (e *Engine) terminate(ctx context.Context) error {
	if !e.running() {
		return nil
	}
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signalling the engine: %w", err)
	}
	timer := time.NewTimer(termGrace)
	defer timer.Stop()
	var why error
	select {
	case <-e.exited:
		return nil
	case <-timer.C:
		why = fmt.Errorf("engine still running %v after SIGTERM; killed it", termGrace)
	case <-ctx.Done():
		why = fmt.Errorf("stopping the engine: %w; killed it", ctx.Err())
	}
	e.cmd.Process.Kill()
	<-e.exited
	return why
}

// procInfo is one process of the machine.
type procInfo struct {
	pid, ppid int
	cmdline   string
}

func listProcs() []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var procs []procInfo
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// "pid (comm) state ppid …": comm may hold spaces and parentheses.
		rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		cmd, _ := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		procs = append(procs, procInfo{pid: pid, ppid: ppid, cmdline: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))})
	}
	return procs
}

// below returns the processes whose command line names a path below root
// (the managed containerd, containerd-shim-runc-v2 -address <root>/…,
// dockerd itself) and all their descendants (the containers' processes).
func below(root string) []procInfo {
	procs := listProcs()
	marked := map[int]bool{}
	for _, p := range procs {
		if strings.Contains(p.cmdline, root+"/") {
			marked[p.pid] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for _, p := range procs {
			if !marked[p.pid] && marked[p.ppid] {
				marked[p.pid], changed = true, true
			}
		}
	}
	var out []procInfo
	for _, p := range procs {
		if marked[p.pid] && p.pid != os.Getpid() {
			out = append(out, p)
		}
	}
	return out
}

// killLeftovers waits up to settleGrace for the engine's processes to exit
// on their own, then SIGKILLs those still there, by pid, and returns them.
func killLeftovers(ctx context.Context, root string) []string {
	deadline := time.Now().Add(settleGrace)
	delay := 5 * time.Millisecond
	var left []procInfo
	for {
		left = below(root)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
	var found []string
	for _, p := range left {
		found = append(found, fmt.Sprintf("%d %s", p.pid, p.cmdline))
		syscall.Kill(p.pid, syscall.SIGKILL)
	}
	// Give the kernel a moment to tear them down so their mounts can go.
	for wait := time.Now().Add(settleGrace); len(below(root)) > 0 && time.Now().Before(wait); {
		time.Sleep(20 * time.Millisecond)
	}
	return found
}

// unmountBelow lazily unmounts every mount point at or below root, the
// deepest first, and returns them.
func unmountBelow(root string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == root || strings.HasPrefix(mp, root+"/") {
			points = append(points, mp)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range points {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	return points
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sweepStale removes engine directories whose test binary died without
// stopping its engine (killed, or go test's timeout panic: dockerd then
// shuts down on Pdeathsig but its directory, and sometimes mounts, stay).
// A directory is stale when its owner process is gone and no process runs
// from it any more; one without an owner file may be in creation and is
// left alone.
func sweepStale(logf func(string, ...any)) {
	for _, base := range rootBases() {
		dirs, _ := filepath.Glob(filepath.Join(base, rootPrefix+"*"))
		for _, dir := range dirs {
			b, err := os.ReadFile(filepath.Join(dir, ownerFile))
			if err != nil {
				continue
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH || len(below(dir)) > 0 {
				continue
			}
			mounts := unmountBelow(dir)
			if err := os.RemoveAll(dir); err != nil {
				logf("dockertest: removing stale engine directory %s: %v", dir, err)
				continue
			}
			logf("dockertest: removed stale engine directory %s of dead process %d (%d mounts)", dir, pid, len(mounts))
		}
	}
}
