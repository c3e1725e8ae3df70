package main

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTreeCPUAndSplit(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const workerIno, shIno = 7, 9
	rec := func(pid, tgid, ppid uint32, comm string, ino uint64, start, exit float64, cpuMs int) exitRec {
		return exitRec{pid: pid, tgid: tgid, ppid: ppid, comm: comm, exeIno: ino, start: at(start), exit: at(exit), cpu: time.Duration(cpuMs) * time.Millisecond}
	}
	recs := []exitRec{
		// A step's sh (child of the worker's child 200) exits first; read
		// at once, while the child's records are read late, so the sh
		// looks as if it started before the child.
		rec(201, 201, 200, "sh", shIno, 9.7, 9.71, 1),
		// The child: two threads, then its leader.
		rec(202, 200, 100, "worker", workerIno, 9.9, 10.05, 3),
		rec(200, 200, 100, "worker", workerIno, 9.8, 10.1, 10),
		// Not ours: pid 300 under another parent, and a process that got
		// the child's pid 200 after it was gone (pid_max is small), with a
		// child of its own.
		rec(300, 300, 1, "cc1", 11, 5, 12, 500),
		rec(200, 200, 50, "make", 12, 40, 45, 300),
		rec(205, 205, 200, "sh", shIno, 41, 42, 2),
		// The supervisor exits last; one of its threads too.
		rec(101, 100, 99, "worker", workerIno, 0.5, 60, 4),
		rec(100, 100, 99, "worker", workerIno, 0, 60, 20),
	}
	tree := treeCPU(recs, 100)
	got := splitCPU(tree, workerIno)
	want := cpuSplit{supervisor: 24 * time.Millisecond, children: 13 * time.Millisecond, nChildren: 1,
		others: map[string]*commCPU{"sh": {n: 1, cpu: time.Millisecond}}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(cpuSplit{}, commCPU{})); diff != "" {
		t.Errorf("splitCPU(treeCPU(recs, 100)) mismatch (-want +got):\n%s", diff)
	}
}

func TestParseExitIgnoresOtherAttributes(t *testing.T) {
	t.Parallel()
	if got := parseExit(nlAttr(6, []byte{1, 2, 3, 4}), time.Now()); len(got) != 0 {
		t.Errorf("parseExit(null attribute) = %v, want none", got)
	}
}
