package main

// The compare mode: our worker beside a second worker binary (the Rust
// worker that ../shared/realserver/build.sh builds) on one Strøm server,
// in one run, in alternating rounds, everything timed from the server's
// view (its /api). Run from the repository root, with the server up:
//
//	go run ./scripts/bench -compare -rust /path/to/stroem-worker-rust-release
//
// The workspace (-workspace) must hold a task whose one step runs `true`
// (-noop-task) and one whose step runs `sleep {{ input.secs }}`
// (-sleep-task): scripts/bench/compare-workflow.yaml has both. The mode
// needs root (taskstats) and fails at once when the server does not answer
// or has jobs or workers of its own running: a worker of the bench would
// take their steps, or share the machine with them.
//
// Per round and worker, with the same config (max_concurrent, poll 1 s,
// capabilities [script], each worker its own workspace_dir kept across
// rounds):
//   - steps/s: -steps jobs queued, then the worker started; from its start
//     to the last job's completed_at; at max_concurrent 1 and 4;
//   - CPU per step: user+system of every process running the worker's
//     binary (supervisor and children, from their taskstats exit records),
//     not the steps' own processes, over the whole run (start to exit),
//     divided by the steps; the server's processes' CPU over the same run;
//   - PSS per running step: 4 `sleep` steps running, the summed PSS of the
//     worker's processes divided by 4;
//   - pickup: one job at a time after a random gap, job created_at to the
//     step's started_at (the worker's start call);
//   - idle: CPU (scheduler run time), PSS/RSS and requests through a
//     counting proxy (the idle run only).

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

type workerKind struct {
	label   string // column title
	name    string // worker_name
	bin     string
	ino     uint64
	cmdTail []string // after --config FILE
	env     []string
	dir     string // workspace_dir, kept across rounds (a warm cache, as in service)
	version string
	res     results
}

type results struct {
	rate       map[int][]float64 // steps/s by max_concurrent
	cpu        map[int][]float64 // worker ms per step
	sup, child map[int][]float64
	stepProcs  map[int][]float64 // ms per step of the other processes (sh ...)
	server     map[int][]float64 // server ms per step
	pssPer     []float64         // MiB
	pssTotal   []float64
	rssTotal   []float64
	pickup     []time.Duration
	idleCPU    []float64 // % of a core
	idlePSS    []float64 // MiB
	idleRSS    []float64
	idleClaims []float64
	idleReqs   []float64
	otherComm  map[string]bool
	reqPerStep float64   // requests to the server per `true` step (whole run)
	idleServer []float64 // server CPU (% of a core) while the worker idles
}

type cmpBench struct {
	api     *stromAPI
	server  string
	dir     string
	exits   *exitLog
	srvProc []string
	rng     *rand.Rand
	idle    int
	logs    []string // per-run lines, repeated under the table
}

func compareMain() {
	ctx := context.Background()
	b := &cmpBench{server: strings.TrimRight(*cmpServer, "/"), srvProc: strings.Split(*cmpSrvProcs, ","), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 15)), idle: *idleSecs}
	apiBase := *cmpAPI
	if apiBase == "" {
		apiBase = b.server
	}
	b.api = newStromAPI(apiBase)
	steps, rounds, pickups, sleepSecs := *cmpSteps, *cmpRounds, *cmpPickups, 10
	if *quick {
		steps, rounds, pickups, sleepSecs = min(steps, 40), 1, min(pickups, 4), 6
		b.idle = min(b.idle, 5)
	}

	srvVersion, err := b.api.version(ctx)
	if err != nil {
		cmpFail("no Strøm server answers at %s (%v).\nStart one (the real server of ../shared/realserver: REALSERVER_DIR=<dir> <recipe>/start.sh), or point -server/-api at one.", apiBase, err)
	}
	if err := b.preflight(ctx); err != nil {
		cmpFail("%v", err)
	}
	if os.Geteuid() != 0 {
		cmpFail("-compare needs root: it reads taskstats exit records (netlink) to charge CPU to the worker's processes but not to its steps'")
	}
	b.exits, err = openExitLog()
	if err != nil {
		cmpFail("%v", err)
	}
	defer b.exits.close()

	b.dir, err = os.MkdirTemp("", "stroem-bench-compare-")
	check(err)
	if !*cmpKeep {
		defer os.RemoveAll(b.dir)
	}
	workers := []*workerKind{b.ours()}
	if *cmpRust != "" {
		workers = append(workers, b.rust(*cmpRust))
	}
	load0 := loadAvg()
	start := time.Now()
	fmt.Fprintf(os.Stderr, "compare: server %s (%s), %d rounds, %d steps per run, load average %s\n", b.server, srvVersion, rounds, steps, load0)

	for _, w := range workers {
		fmt.Fprintf(os.Stderr, "warm-up: %s\n", w.label)
		b.stepsRun(ctx, w, 4, 8, stepsOpts{})
		w.version = b.registeredVersion(ctx, w)
	}
	perRound := func(r int) int { return pickups/rounds + btoi(r < pickups%rounds) }
	for r := range rounds {
		order := slices.Clone(workers)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		fmt.Fprintf(os.Stderr, "round %d of %d (load average %s)\n", r+1, rounds, loadAvg())
		for _, conc := range []int{1, 4} {
			for _, w := range order {
				b.stepsRun(ctx, w, conc, steps, stepsOpts{keep: true})
			}
		}
		for _, w := range order {
			b.pssRun(ctx, w, sleepSecs)
		}
		for _, w := range order {
			b.pickupRun(ctx, w, perRound(r))
		}
		for _, w := range order {
			b.idleRun(ctx, w)
		}
	}
	if *cmpPerf != "" {
		check(os.MkdirAll(*cmpPerf, 0o755))
		for _, w := range workers {
			out, _ := filepath.Abs(filepath.Join(*cmpPerf, w.name+".perf.data"))
			fmt.Fprintf(os.Stderr, "profile: %s, max_concurrent 4, under perf record (not in the table) -> %s\n", w.label, out)
			b.stepsRun(ctx, w, 4, steps, stepsOpts{perfOut: out})
		}
	}
	for _, w := range workers {
		n := min(steps, 100)
		fmt.Fprintf(os.Stderr, "requests: %s, max_concurrent 4, %d steps through a counting proxy (not timed)\n", w.label, n)
		b.stepsRun(ctx, w, 4, n, stepsOpts{countRequests: true})
	}
	load1 := loadAvg()
	b.table(workers, steps, sleepSecs, srvVersion, load0, load1, time.Since(start))
	if *cmpKeep {
		fmt.Fprintf(os.Stderr, "run directory kept: %s\n", b.dir)
	}
}

func cmpFail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// preflight refuses a server that has work or workers of its own: a
// worker of the bench would take others' steps, and two workers would
// share the machine.
func (b *cmpBench) preflight(ctx context.Context) error {
	names, err := b.api.tasks(ctx, *cmpWS)
	if err != nil {
		return fmt.Errorf("listing the tasks of workspace %s: %w", *cmpWS, err)
	}
	for _, t := range []string{*cmpNoop, *cmpSleep} {
		if !slices.Contains(names, t) {
			return fmt.Errorf("workspace %s has no task %s: add scripts/bench/compare-workflow.yaml to its .workflows/ (for the real server: $REALSERVER_DIR/workspace/.workflows/), then POST /api/workspaces/%s/refresh", *cmpWS, t, *cmpWS)
		}
	}
	c, err := b.api.counts(ctx)
	if err != nil {
		return err
	}
	if c.Pending+c.Running > 0 {
		return fmt.Errorf("the server has %d pending and %d running jobs: a worker of this bench would take their steps; let them finish or cancel them (POST /api/jobs/{id}/cancel)", c.Pending, c.Running)
	}
	// A live worker heartbeats at least every 30 s (both workers' default).
	deadline := time.Now().Add(40 * time.Second)
	for {
		ws, err := b.api.workers(ctx)
		if err != nil {
			return err
		}
		var alive []string
		for _, w := range ws {
			if w.LastHeartbeat != nil && time.Since(*w.LastHeartbeat) < 35*time.Second && w.Status == "active" {
				alive = append(alive, fmt.Sprintf("%s (%s, heartbeat %.0f s ago)", w.Name, w.WorkerID, time.Since(*w.LastHeartbeat).Seconds()))
			}
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("other workers are running on this server: %s; stop them first", strings.Join(alive, ", "))
		}
		fmt.Fprintf(os.Stderr, "waiting for recently seen workers to go quiet: %s\n", strings.Join(alive, ", "))
		time.Sleep(5 * time.Second)
	}
}

func (b *cmpBench) ours() *workerKind {
	bin, src := *cmpOurs, ""
	if fi, err := os.Stat(bin); err == nil && fi.IsDir() {
		src = bin
		bin = filepath.Join(b.dir, "stroem-worker")
		// As scripts/deploy/docker-context.sh builds it (a static binary),
		// keeping the symbols for perf: a plain `go build` links libc
		// (cgo), and every child then pays the dynamic loader.
		build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/stroem-worker")
		build.Dir, build.Stderr = src, os.Stderr
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		check(build.Run())
	}
	bin, err := filepath.Abs(bin)
	check(err)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		cmpFail("%s version: %v", bin, err)
	}
	label := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	if src != "" {
		if c, err := exec.Command("git", "-C", src, "log", "-1", "--format=%h %cs").Output(); err == nil {
			label += ", built (CGO_ENABLED=0 -trimpath) from commit " + strings.TrimSpace(string(c))
			if st, _ := exec.Command("git", "-C", src, "status", "--porcelain", "--untracked-files=no").Output(); len(st) > 0 {
				label += " plus uncommitted changes"
			}
		}
	}
	return &workerKind{label: "Go worker", name: "bench-go", bin: bin, ino: fileInode(bin), cmdTail: []string{"supervise"},
		dir: filepath.Join(b.dir, "ws-go"), version: label}
}

func (b *cmpBench) rust(bin string) *workerKind {
	bin, err := filepath.Abs(bin)
	check(err)
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		cmpFail("-rust %s: not an executable file", bin)
	}
	label := "Rust worker"
	if !strings.Contains(strings.ToLower(filepath.Base(bin)), "rust") {
		label = "Second worker (" + filepath.Base(bin) + ")"
	}
	return &workerKind{label: label, name: "bench-rust", bin: bin, ino: fileInode(bin),
		env: []string{"RUST_LOG=info"}, dir: filepath.Join(b.dir, "ws-rust")}
}

// registeredVersion is what the worker told the server at registration.
func (b *cmpBench) registeredVersion(ctx context.Context, w *workerKind) string {
	ws, err := b.api.workers(ctx)
	if err != nil {
		return w.version
	}
	for _, r := range ws {
		if r.Name == w.name {
			if w.version == "" {
				return r.Version
			}
			return fmt.Sprintf("%s (registers as %q)", w.version, r.Version)
		}
	}
	return w.version
}

// running is a started worker.
type running struct {
	cmd     *exec.Cmd
	root    int // cmd's pid: the worker, or perf running it
	pid     int // the worker's own pid
	started time.Time
	log     *os.File
}

func (b *cmpBench) start(w *workerKind, conc int, serverURL, perfOut string) *running {
	cfg := filepath.Join(b.dir, w.name+".yaml")
	// The same keys for both workers: the Rust worker refuses unknown ones
	// and wants an integer poll interval of at least 1.
	check(os.WriteFile(cfg, fmt.Appendf(nil, "server_url: %q\nworker_token: %q\nworker_name: %q\nmax_concurrent: %d\npoll_interval_secs: 1\nworkspace_dir: %q\ncapabilities: [script]\n",
		serverURL, *cmpToken, w.name, conc, w.dir), 0o600))
	args := append([]string{w.bin, "--config", cfg}, w.cmdTail...)
	if perfOut != "" {
		args = append([]string{"perf", "record", "-e", "cpu-clock", "-g", "-o", perfOut, "--"}, args...)
	}
	log, err := os.OpenFile(filepath.Join(b.dir, w.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	check(err)
	fmt.Fprintf(log, "\n=== %s max_concurrent %d server %s\n", time.Now().Format(time.RFC3339Nano), conc, serverURL)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), w.env...)
	cmd.Dir = b.dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r := &running{cmd: cmd, log: log, started: time.Now()}
	check(cmd.Start())
	r.root, r.pid = cmd.Process.Pid, cmd.Process.Pid
	if perfOut != "" {
		r.pid = 0
		for deadline := time.Now().Add(10 * time.Second); r.pid == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			for _, p := range liveTree(r.root) {
				if p.exeIno == w.ino {
					r.pid = p.pid
					break
				}
			}
		}
		if r.pid == 0 {
			cmpFail("perf did not start %s", w.bin)
		}
	}
	return r
}

// stop asks the worker to stop (SIGTERM: both drain, and nothing runs) and
// waits for it.
func (b *cmpBench) stop(r *running) {
	syscall.Kill(r.pid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- r.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "  worker exited: %v (log %s)\n", err, r.log.Name())
		}
	case <-time.After(90 * time.Second):
		fmt.Fprintf(os.Stderr, "  worker did not stop in 90 s: killing its process group\n")
		syscall.Kill(-r.root, syscall.SIGKILL)
		<-done
	}
	r.log.Close()
}

// queue queues n jobs of task, four requests at a time.
func (b *cmpBench) queue(ctx context.Context, n int, task string, input map[string]string) []string {
	ids := make([]string, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := 0
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= n {
					return
				}
				id, err := b.api.execute(ctx, *cmpWS, task, input)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				ids[i] = id
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	check(first)
	return ids
}

// details reads jobs, four at a time.
func (b *cmpBench) details(ctx context.Context, ids []string) []jobDetail {
	out := make([]jobDetail, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	var mu sync.Mutex
	var first error
	for i, id := range ids {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			j, err := b.api.job(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			out[i] = j
		})
	}
	wg.Wait()
	check(first)
	return out
}

// waitIdle waits until the server has no pending or running job.
func (b *cmpBench) waitIdle(ctx context.Context, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := b.api.counts(ctx)
		if err == nil && c.Pending == 0 && c.Running == 0 {
			return
		}
		if time.Now().After(deadline) {
			cmpFail("jobs still pending or running after %s (%+v, %v)", timeout, c, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ourWorkerIDs are the ids registered under w's name.
func (b *cmpBench) ourWorkerIDs(ctx context.Context, w *workerKind) map[string]bool {
	ids := map[string]bool{}
	ws, err := b.api.workers(ctx)
	check(err)
	for _, r := range ws {
		if r.Name == w.name {
			ids[r.WorkerID] = true
		}
	}
	return ids
}

type stepsOpts struct {
	keep          bool   // a measured run: into the table
	perfOut       string // run the worker under perf record, writing here
	countRequests bool   // through a counting proxy: requests per step
}

// stepsRun: n `true` jobs queued, the worker started, timed to the last
// job completed (server timestamps), then stopped; CPU from exit records.
func (b *cmpBench) stepsRun(ctx context.Context, w *workerKind, conc, n int, o stepsOpts) {
	ids := b.queue(ctx, n, *cmpNoop, nil)
	serverURL := b.server
	var proxy *countingProxy
	if o.countRequests {
		var err error
		proxy, err = startCountingProxy(b.server)
		check(err)
		defer proxy.close()
		serverURL = proxy.url
	}
	if c, err := b.api.counts(ctx); err == nil && (c.Pending != n || c.Running != 0) {
		fmt.Fprintf(os.Stderr, "  warning: %d pending and %d running jobs on the server, %d of them ours\n", c.Pending, c.Running, n)
	}
	b.exits.record()
	srv0, _ := namedTicks(b.srvProc)
	r := b.start(w, conc, serverURL, o.perfOut)
	b.waitIdle(ctx, 20*time.Minute)
	b.stop(r)
	recs, lost := b.exits.take()
	srv1, nsrv := namedTicks(b.srvProc)

	jobs := b.details(ctx, ids)
	mine := b.ourWorkerIDs(ctx, w)
	var end time.Time
	bad, foreign := 0, 0
	for _, j := range jobs {
		if j.Status != "completed" || j.CompletedAt == nil {
			bad++
			continue
		}
		end = maxTime(end, *j.CompletedAt)
		for _, s := range j.Steps {
			if s.WorkerID == nil || !mine[*s.WorkerID] {
				foreign++
			}
		}
	}
	el := end.Sub(r.started)
	tree := treeCPU(recs, r.root)
	split := splitCPU(tree, w.ino)
	if *cmpKeep {
		b.dumpTree(fmt.Sprintf("%s-mc%d-%s.procs", w.name, conc, r.started.Format("150405")), tree, r.started, w.ino)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	var others []string
	var otherCPU time.Duration
	for c, v := range split.others {
		others = append(others, fmt.Sprintf("%s ×%d %.2f ms/step", c, v.n, ms(v.cpu)))
		otherCPU += v.cpu
	}
	slices.Sort(others)
	srvMs := float64(srv1-srv0) * 10 / float64(n)
	line := fmt.Sprintf("%s, max_concurrent %d, %d steps: %.1f steps/s (%.2f s); worker CPU %.1f ms/step (supervisor %.1f, %d other processes of its binary %.1f); not charged: %s; server (%d processes) %.1f ms/step",
		w.label, conc, n, float64(n)/el.Seconds(), el.Seconds(), ms(split.worker()), ms(split.supervisor), split.nChildren, ms(split.children), strings.Join(others, ", "), nsrv, srvMs)
	if o.perfOut != "" {
		line += " [under perf]"
	}
	if proxy != nil {
		total := 0
		var routes []string
		for k, v := range proxy.snapshot() {
			total += v
			routes = append(routes, fmt.Sprintf("%s %.2f", k, float64(v)/float64(n)))
		}
		slices.Sort(routes)
		w.res.reqPerStep = float64(total) / float64(n)
		line += fmt.Sprintf(" [through a counting proxy] requests per step: %.2f: %s", w.res.reqPerStep, strings.Join(routes, ", "))
		b.logs = append(b.logs, line)
	}
	if lost > 0 {
		line += fmt.Sprintf(" [taskstats overflowed %d times: CPU figures low]", lost)
	}
	fmt.Fprintln(os.Stderr, "  "+line)
	if bad > 0 || foreign > 0 {
		cmpFail("%s: %d of %d jobs not completed, %d steps run by another worker", w.label, bad, n, foreign)
	}
	if !o.keep {
		return
	}
	b.logs = append(b.logs, line)
	res := &w.res
	if res.rate == nil {
		res.rate, res.cpu, res.sup, res.child, res.stepProcs, res.server = map[int][]float64{}, map[int][]float64{}, map[int][]float64{}, map[int][]float64{}, map[int][]float64{}, map[int][]float64{}
		res.otherComm = map[string]bool{}
	}
	res.rate[conc] = append(res.rate[conc], float64(n)/el.Seconds())
	if lost == 0 {
		res.cpu[conc] = append(res.cpu[conc], ms(split.worker()))
		res.sup[conc] = append(res.sup[conc], ms(split.supervisor))
		res.child[conc] = append(res.child[conc], ms(split.children))
		res.stepProcs[conc] = append(res.stepProcs[conc], ms(otherCPU))
		for c := range split.others {
			res.otherComm[c] = true
		}
	}
	res.server[conc] = append(res.server[conc], srvMs)
}

// dumpTree writes a run's exited processes (with -keep): pid, parent,
// start and exit (s from the worker's start), CPU, name, and whether it
// runs the worker's binary.
func (b *cmpBench) dumpTree(name string, tree []procCPU, t0 time.Time, ino uint64) {
	var sb strings.Builder
	fmt.Fprintf(&sb, "pid\tppid\tstart_s\texit_s\tcpu_ms\tcomm\tworker_binary\n")
	for _, p := range tree {
		fmt.Fprintf(&sb, "%d\t%d\t%.3f\t%.3f\t%.2f\t%s\t%v\n", p.tgid, p.ppid, p.start.Sub(t0).Seconds(), p.exit.Sub(t0).Seconds(), float64(p.cpu.Microseconds())/1000, p.comm, p.exeIno == ino)
	}
	check(os.WriteFile(filepath.Join(b.dir, name), []byte(sb.String()), 0o644))
}

// pssRun: four sleep steps running at once; the PSS of the worker's own
// processes (not the steps'), divided by four.
func (b *cmpBench) pssRun(ctx context.Context, w *workerKind, secs int) {
	const slots = 4
	ids := b.queue(ctx, slots, *cmpSleep, map[string]string{"secs": fmt.Sprint(secs)})
	r := b.start(w, slots, b.server, "")
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		n := 0
		for _, p := range liveTree(r.root) {
			if p.exeIno != w.ino && p.comm == "sleep" {
				n++
			}
		}
		if n >= slots {
			break
		}
		if time.Now().After(deadline) {
			b.stop(r)
			cmpFail("%s: %d of %d sleep steps running after %d s: is -sleep-task %s a step running `sleep {{ input.secs }}`?", w.label, n, slots, secs, *cmpSleep)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	var pss, rss int64
	nproc := 0
	for range 3 {
		procs := workerProcs(r.root, w.ino)
		p, s := memKB(procs)
		if p > pss {
			pss, rss, nproc = p, s, len(procs)
		}
		time.Sleep(300 * time.Millisecond)
	}
	b.waitIdle(ctx, 5*time.Minute)
	b.stop(r)
	for _, j := range b.details(ctx, ids) {
		if j.Status != "completed" {
			cmpFail("%s: sleep job %s ended %s", w.label, j.JobID, j.Status)
		}
	}
	line := fmt.Sprintf("%s, %d sleep steps running: %d worker processes, PSS %.1f MiB (%.2f MiB per step), RSS %.1f MiB", w.label, slots, nproc, kib(pss), kib(pss)/slots, kib(rss))
	fmt.Fprintln(os.Stderr, "  "+line)
	b.logs = append(b.logs, line)
	w.res.pssPer = append(w.res.pssPer, kib(pss)/slots)
	w.res.pssTotal = append(w.res.pssTotal, kib(pss))
	w.res.rssTotal = append(w.res.rssTotal, kib(rss))
}

func kib(kb int64) float64 { return float64(kb) / 1024 }

// pickupRun: k jobs one at a time, each after a random gap of 0.5-3.5 s
// (so a worker that backs off while idle pays for it as in service): from
// the job's created_at to its step's started_at, both server clocks.
func (b *cmpBench) pickupRun(ctx context.Context, w *workerKind, k int) {
	if k == 0 {
		return
	}
	r := b.start(w, 4, b.server, "")
	time.Sleep(3 * time.Second) // registered and polling
	var lat []string
	for range k {
		time.Sleep(time.Duration(500+b.rng.IntN(3000)) * time.Millisecond)
		id, err := b.api.execute(ctx, *cmpWS, *cmpNoop, nil)
		check(err)
		var j jobDetail
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			j, err = b.api.job(ctx, id)
			check(err)
			if j.Status == "completed" || j.Status == "failed" || j.Status == "cancelled" {
				break
			}
			if time.Now().After(deadline) {
				cmpFail("%s: job %s not done after a minute", w.label, id)
			}
		}
		if j.Status != "completed" || len(j.Steps) != 1 || j.Steps[0].StartedAt == nil {
			cmpFail("%s: pickup job %s ended %s", w.label, id, j.Status)
		}
		d := j.Steps[0].StartedAt.Sub(j.CreatedAt)
		w.res.pickup = append(w.res.pickup, d)
		lat = append(lat, fmt.Sprintf("%.2f", d.Seconds()))
	}
	b.stop(r)
	line := fmt.Sprintf("%s pickup (s): %s", w.label, strings.Join(lat, " "))
	fmt.Fprintln(os.Stderr, "  "+line)
	b.logs = append(b.logs, line)
}

// idleRun: the worker with no work, behind a counting proxy, measured
// after a 10 s warm-up (past registration and any idle back-off).
func (b *cmpBench) idleRun(ctx context.Context, w *workerKind) {
	p, err := startCountingProxy(b.server)
	check(err)
	defer p.close()
	r := b.start(w, 4, p.url, "")
	time.Sleep(10 * time.Second)
	procs := workerProcs(r.root, w.ino)
	srv0, _ := namedTicks(b.srvProc)
	cpu0, c0, t0 := runtimeOf(procs), p.snapshot(), time.Now()
	time.Sleep(time.Duration(b.idle) * time.Second)
	procs = workerProcs(r.root, w.ino)
	cpu1, c1, el := runtimeOf(procs), p.snapshot(), time.Since(t0)
	srv1, _ := namedTicks(b.srvProc)
	srvPct := float64(srv1-srv0) * 10 * float64(time.Millisecond) / float64(el) * 100
	pss, rss := memKB(procs)
	b.stop(r)
	claims := c1["POST /worker/jobs/claim"] - c0["POST /worker/jobs/claim"]
	reqs := 0
	var routes []string
	for k, v := range c1 {
		if d := v - c0[k]; d > 0 {
			reqs += d
			routes = append(routes, fmt.Sprintf("%s ×%d", k, d))
		}
	}
	slices.Sort(routes)
	pct := float64(cpu1-cpu0) / float64(el) * 100
	line := fmt.Sprintf("%s idle %d s: CPU %.3f%% of a core, PSS %.1f MiB, RSS %.1f MiB, %d processes; requests: %s; server CPU meanwhile %.2f%% of a core", w.label, b.idle, pct, kib(pss), kib(rss), len(procs), strings.Join(routes, ", "), srvPct)
	fmt.Fprintln(os.Stderr, "  "+line)
	b.logs = append(b.logs, line)
	w.res.idleCPU = append(w.res.idleCPU, pct)
	w.res.idlePSS = append(w.res.idlePSS, kib(pss))
	w.res.idleRSS = append(w.res.idleRSS, kib(rss))
	w.res.idleClaims = append(w.res.idleClaims, float64(claims))
	w.res.idleReqs = append(w.res.idleReqs, float64(reqs))
	w.res.idleServer = append(w.res.idleServer, srvPct)
}

func fsType(dir string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return "?"
	}
	if name, ok := map[int64]string{0xEF53: "ext4", 0x01021994: "tmpfs", 0x794c7630: "overlayfs", 0x9123683E: "btrfs", 0x58465342: "xfs"}[int64(st.Type)]; ok {
		return name
	}
	return fmt.Sprintf("fs type %#x", st.Type)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// med formats the median and, over several rounds, the range.
func med(v []float64, prec int) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	f := fmt.Sprintf("%%.%df", prec)
	if len(s) == 1 {
		return fmt.Sprintf(f, m)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", m, s[0], s[len(s)-1])
}

// quantile is the nearest-rank q-quantile.
func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (b *cmpBench) table(workers []*workerKind, steps, sleepSecs int, srvVersion, load0, load1 string, took time.Duration) {
	host, _ := os.Hostname()
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var uts syscall.Utsname
	syscall.Uname(&uts)
	kernel := cString(uts.Release[:])
	fmt.Printf("Measured %s on %s: %d cores (%s), Linux %s, %s; took %s; load average %s at the start, %s at the end.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), cpu, kernel, runtime.Version(), took.Round(time.Second), load0, load1)
	fmt.Printf("Server: Strøm %s at %s; its CPU counts processes named %s.\n", srvVersion, b.server, strings.Join(b.srvProc, ", "))
	for _, w := range workers {
		fmt.Printf("%s: %s, %s.\n", w.label, w.bin, w.version)
	}
	rounds := 0
	if len(workers) > 0 && workers[0].res.rate != nil {
		rounds = len(workers[0].res.rate[4])
	}
	fmt.Printf("Same config for both (poll_interval_secs 1, capabilities [script], workspace_dir on %s); %d alternating rounds; each cell is the median (range over rounds).\n\n", fsType(b.dir), rounds)

	head := "| Same server, same run |"
	sep := "|---|"
	for _, w := range workers {
		head += " " + w.label + " |"
		sep += "---|"
	}
	fmt.Println(head)
	fmt.Println(sep)
	row := func(metric string, cell func(r *results) string) {
		line := "| " + metric + " |"
		for _, w := range workers {
			line += " " + cell(&w.res) + " |"
		}
		fmt.Println(line)
	}
	for _, c := range []int{1, 4} {
		row(fmt.Sprintf("`true` steps/s, max_concurrent %d (%d steps)", c, steps), func(r *results) string { return med(r.rate[c], 1) })
	}
	for _, c := range []int{1, 4} {
		row(fmt.Sprintf("Worker CPU per `true` step, max_concurrent %d (ms)", c), func(r *results) string { return med(r.cpu[c], 1) })
	}
	row("of which supervisor / per-step children, max_concurrent 4 (ms)", func(r *results) string {
		if slices.Max(append([]float64{0}, r.child[4]...)) == 0 {
			return med(r.sup[4], 1) + " / none (one process)"
		}
		return med(r.sup[4], 1) + " / " + med(r.child[4], 1)
	})
	row("Step processes' own CPU per step, not charged above (ms)", func(r *results) string {
		var names []string
		for c := range r.otherComm {
			names = append(names, "`"+c+"`")
		}
		slices.Sort(names)
		return med(r.stepProcs[4], 2) + " " + strings.Join(names, ", ")
	})
	for _, c := range []int{1, 4} {
		row(fmt.Sprintf("Server CPU per step (%s), max_concurrent %d (ms)", strings.Join(b.srvProc, " + "), c), func(r *results) string { return med(r.server[c], 1) })
	}
	row(fmt.Sprintf("PSS per running step (4 `sleep %d` steps, worker's processes / 4, MiB)", sleepSecs), func(r *results) string { return med(r.pssPer, 2) })
	row("Worker PSS / summed RSS with 4 steps running (MiB)", func(r *results) string { return med(r.pssTotal, 1) + " / " + med(r.rssTotal, 1) })
	row("Pickup p50 / p90 (poll 1 s, job queued → step started, s)", func(r *results) string {
		if len(r.pickup) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f / %.2f (n=%d)", quantile(r.pickup, 0.5).Seconds(), quantile(r.pickup, 0.9).Seconds(), len(r.pickup))
	})
	row(fmt.Sprintf("Idle over %d s: CPU (%% of a core)", b.idle), func(r *results) string { return med(r.idleCPU, 3) })
	row("Idle: PSS / RSS (MiB)", func(r *results) string { return med(r.idlePSS, 1) + " / " + med(r.idleRSS, 1) })
	row(fmt.Sprintf("Idle: claims / all requests in %d s", b.idle), func(r *results) string { return med(r.idleClaims, 0) + " / " + med(r.idleReqs, 0) })
	row("Idle: server CPU meanwhile (% of a core; its own background work included)", func(r *results) string { return med(r.idleServer, 1) })
	row("Requests to the server per `true` step (separate run through a counting proxy)", func(r *results) string {
		if r.reqPerStep == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", r.reqPerStep)
	})
	fmt.Println()
	fmt.Println("Runs:")
	fmt.Println()
	for _, l := range b.logs {
		fmt.Println("- " + l)
	}
}
