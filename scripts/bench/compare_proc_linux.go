package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What the compare mode reads about processes: CPU charged to a worker's
// processes (from exit records, see exitLog), and live figures (PSS, RSS,
// CPU so far) of the processes of a running worker, found by walking
// /proc.

// procCPU is one exited process of a worker's tree, its threads summed.
type procCPU struct {
	tgid, ppid  uint32
	comm        string
	exeIno      uint64
	start, exit time.Time
	cpu         time.Duration
}

// treeCPU returns the processes of the tree rooted at pid root that exited
// while recs were recorded (root itself included once it has exited).
// Pids are reused (pid_max is 32768 here), so a parent must have been
// alive when its child exited.
func treeCPU(recs []exitRec, root int) []procCPU {
	const slack = time.Second
	var procs []*procCPU
	for _, r := range recs {
		if r.pid == r.tgid {
			procs = append(procs, &procCPU{tgid: r.tgid, ppid: r.ppid, comm: r.comm, exeIno: r.exeIno, start: r.start, exit: r.exit, cpu: r.cpu})
		}
	}
	slices.SortFunc(procs, func(a, b *procCPU) int { return a.start.Compare(b.start) })
	for _, r := range recs {
		if r.pid == r.tgid {
			continue
		}
		// A thread belongs to the latest process of its group that had
		// started when the thread did.
		var owner *procCPU
		for _, p := range procs {
			if p.tgid == r.tgid && !p.start.After(r.start.Add(slack)) {
				owner = p
			}
		}
		if owner == nil { // its leader has not exited (not ours, or still running)
			owner = &procCPU{tgid: r.tgid, ppid: r.ppid, comm: r.comm, exeIno: r.exeIno, start: r.start, exit: r.exit}
			procs = append(procs, owner)
			slices.SortFunc(procs, func(a, b *procCPU) int { return a.start.Compare(b.start) })
		}
		owner.cpu += r.cpu
	}
	// Times are when records were read, so a child can look as if it
	// started before its parent: add members until nothing changes.
	in := map[*procCPU]bool{}
	for changed := true; changed; {
		changed = false
		for _, p := range procs {
			if in[p] {
				continue
			}
			ok := int(p.tgid) == root || int(p.ppid) == root // root is alive while its children run, or has just exited
			for q := range in {
				if q.tgid == p.ppid && !q.start.After(p.start.Add(slack)) && !q.exit.Before(p.exit.Add(-slack)) {
					ok = true
					break
				}
			}
			if ok {
				in[p], changed = true, true
			}
		}
	}
	var out []procCPU
	for _, p := range procs {
		if in[p] {
			out = append(out, *p)
		}
	}
	return out
}

// cpuSplit is a worker's CPU from its exit records, split by who spent it.
type cpuSplit struct {
	supervisor, children time.Duration // processes running the worker's binary
	nChildren            int
	others               map[string]*commCPU // other processes (the steps'), by name
}

type commCPU struct {
	n   int
	cpu time.Duration
}

func (c cpuSplit) worker() time.Duration { return c.supervisor + c.children }

// splitCPU charges a tree's processes to the worker when they run its
// binary (same inode): the top one is the supervisor, the rest its
// children. Everything else (sh, what the step runs, a perf wrapper) is
// listed by name and not charged.
func splitCPU(procs []procCPU, workerIno uint64) cpuSplit {
	s := cpuSplit{others: map[string]*commCPU{}}
	isWorker := map[uint32]bool{}
	for _, p := range procs {
		if p.exeIno == workerIno {
			isWorker[p.tgid] = true
		}
	}
	for _, p := range procs {
		switch {
		case p.exeIno == workerIno && !isWorker[p.ppid]:
			s.supervisor += p.cpu
		case p.exeIno == workerIno:
			s.children += p.cpu
			s.nChildren++
		default:
			c := s.others[p.comm]
			if c == nil {
				c = &commCPU{}
				s.others[p.comm] = c
			}
			c.n++
			c.cpu += p.cpu
		}
	}
	return s
}

// liveProc is a running process, as /proc shows it now.
type liveProc struct {
	pid, ppid int
	comm      string
	exeIno    uint64
	ticks     int64 // utime+stime+cutime+cstime, in clock ticks (1/100 s)
	cticks    int64 // cutime+cstime: reaped children
}

func liveProcs() []liveProc {
	ents, _ := os.ReadDir("/proc")
	var out []liveProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i, j := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(string(data[j+2:]))
		if len(f) < 16 {
			continue
		}
		p := liveProc{pid: pid, comm: string(data[i+1 : j])}
		p.ppid, _ = strconv.Atoi(f[1])
		for _, k := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseInt(f[k], 10, 64)
			p.ticks += v
			if k >= 13 {
				p.cticks += v
			}
		}
		p.exeIno = exeInode(pid)
		out = append(out, p)
	}
	return out
}

func exeInode(pid int) uint64 {
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func fileInode(path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// liveTree is root and its descendants now.
func liveTree(root int) []liveProc {
	all := liveProcs()
	in := map[int]bool{root: true}
	for changed := true; changed; {
		changed = false
		for _, p := range all {
			if !in[p.pid] && in[p.ppid] {
				in[p.pid], changed = true, true
			}
		}
	}
	var out []liveProc
	for _, p := range all {
		if in[p.pid] {
			out = append(out, p)
		}
	}
	return out
}

// workerProcs are the processes of root's tree that run the worker binary.
func workerProcs(root int, workerIno uint64) []liveProc {
	var out []liveProc
	for _, p := range liveTree(root) {
		if p.exeIno == workerIno {
			out = append(out, p)
		}
	}
	return out
}

// memKB sums Pss (from smaps_rollup) and VmRSS of processes, in KiB.
func memKB(procs []liveProc) (pss, rss int64) {
	for _, p := range procs {
		pss += procField(fmt.Sprintf("/proc/%d/smaps_rollup", p.pid), "Pss:")
		rss += procField(fmt.Sprintf("/proc/%d/status", p.pid), "VmRSS:")
	}
	return pss, rss
}

func procField(path, key string) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// runtimeOf sums the scheduler's exact run time (schedstat, ns) of every
// live thread of procs, plus what their reaped children spent (cutime and
// cstime, in ticks). Threads that exited are missed, which is why idle is
// measured over a window in which the worker's threads stay.
func runtimeOf(procs []liveProc) time.Duration {
	var d time.Duration
	for _, p := range procs {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", p.pid))
		for _, t := range tasks {
			data, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			if f := strings.Fields(string(data)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				d += time.Duration(ns)
			}
		}
		d += time.Duration(p.cticks) * 10 * time.Millisecond
	}
	return d
}

// namedTicks sums utime+stime+cutime+cstime of every process whose name is
// in names (a server and its database: exited backends show up in their
// parent's cutime once reaped).
func namedTicks(names []string) (int64, int) {
	var t int64
	n := 0
	for _, p := range liveProcs() {
		if slices.Contains(names, p.comm) {
			t += p.ticks
			n++
		}
	}
	return t, n
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:3], " ")
}
