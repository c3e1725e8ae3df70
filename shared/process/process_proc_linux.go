package process

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// procInfo is what /proc/<pid>/stat says about a process.
type procInfo struct {
	pid, ppid, pgrp int
	state           byte // 'R', 'S', 'D', 'Z', ...
	// start is the start time in clock ticks since boot: with the pid, it
	// names a process for good (pids are reused, start times are not).
	start uint64
}

func (p procInfo) zombie() bool { return p.state == 'Z' || p.state == 'X' }

// parseStat parses the content of /proc/<pid>/stat: "pid (comm) S ppid
// pgrp ...". comm is chosen by the process and may hold spaces and
// parentheses, so the fixed fields start after the last ')'.
func parseStat(b []byte) (procInfo, error) {
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procInfo{}, fmt.Errorf("parsing process stat %q: no command name", b)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procInfo{}, fmt.Errorf("parsing process stat pid: %w", err)
	}
	f := bytes.Fields(b[end+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return procInfo{}, fmt.Errorf("parsing process stat %q: too few fields", b)
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil {
		return procInfo{}, fmt.Errorf("parsing process stat ppid: %w", err)
	}
	pgrp, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return procInfo{}, fmt.Errorf("parsing process stat pgrp: %w", err)
	}
	var start uint64
	if len(f) > 19 {
		start, _ = strconv.ParseUint(string(f[19]), 10, 64)
	}
	return procInfo{pid: pid, ppid: ppid, pgrp: pgrp, state: f[0][0], start: start}, nil
}

// readStat reads one process's stat; fs.ErrNotExist when it is gone.
func readStat(pid int) (procInfo, error) {
	var buf [1024]byte
	b, err := readSmall("/proc/"+strconv.Itoa(pid)+"/stat", buf[:])
	if err != nil {
		if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
			err = fs.ErrNotExist
		}
		return procInfo{}, err
	}
	return parseStat(b)
}

// readSmall reads a small /proc file into buf with three plain system
// calls. os.ReadFile would cost twice as many (it registers every file
// with the network poller), and a scan of /proc reads hundreds of them on
// the path of every step.
func readSmall(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}

// scanProcs lists every process visible in /proc. Processes that exit
// while it runs are left out; that is the nature of /proc, and callers
// rescan until the state they want holds.
func scanProcs() ([]procInfo, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	procs := make([]procInfo, 0, len(names))
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		p, err := readStat(pid)
		if err != nil {
			continue // gone, or unreadable: nothing we could do to it
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// groupAlive reports whether process group pgid has a process that is not
// a zombie. kill(-pgid, 0) answers "gone" cheaply; zombies (a leader that
// nobody has waited for yet) keep it saying "there", so then /proc decides.
func groupAlive(pgid int) (bool, error) {
	switch err := unix.Kill(-pgid, 0); {
	case errors.Is(err, unix.ESRCH):
		return false, nil
	case err != nil && !errors.Is(err, unix.EPERM):
		return false, fmt.Errorf("probing process group %d: %w", pgid, err)
	}
	procs, err := scanProcs()
	if err != nil {
		return false, err
	}
	for _, p := range procs {
		if p.pgrp == pgid && !p.zombie() {
			return true, nil
		}
	}
	return false, nil
}

// childPids lists this process's children from /proc/self/task/*/children
// (one file per thread): far cheaper than a scan of /proc. ok is false
// where the kernel does not offer the files (CONFIG_PROC_CHILDREN).
func childPids() (pids []int, ok bool) {
	d, err := os.Open("/proc/self/task")
	if err != nil {
		return nil, false
	}
	tids, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, false
	}
	var buf [4096]byte
	for _, tid := range tids {
		b, err := readSmall("/proc/self/task/"+tid+"/children", buf[:])
		switch {
		case errors.Is(err, fs.ErrNotExist) && len(pids) == 0 && tid == tids[0]:
			return nil, false
		case err != nil:
			continue // a thread that ended meanwhile
		case len(b) == len(buf):
			return nil, false // too many to list here: scan instead
		}
		for _, f := range bytes.Fields(b) {
			if pid, err := strconv.Atoi(string(f)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids, true
}
