// Command chaos runs stroem-worker supervise against the fake server
// while things go wrong, and checks that nothing is lost: 30% of requests
// fail with 503, others are slow or dropped, the server goes down for a
// while and comes back having forgotten its cancel set, child workers are
// SIGKILLed at random, and the supervisor itself is SIGKILLed and
// restarted. Run from the repository root:
//
//	go run ./scripts/chaos           # full size
//	go run ./scripts/chaos -quick    # small, for CI
//
// It prints delivered/expected steps and lines, duplicates, stuck steps
// and leftover processes, and exits 1 when a line of a completed step is
// missing, a step is stuck or a process is left.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

var (
	quick  = flag.Bool("quick", false, "small size (CI)")
	steps  = flag.Int("steps", 200, "steps to run")
	lines  = flag.Int("lines", 10000, "numbered lines per step")
	outage = flag.Duration("outage", 20*time.Second, "how long the server is down")
	kills  = flag.Int("kills", 5, "child workers to SIGKILL")
)

func main() {
	flag.Parse()
	if *quick {
		*steps, *lines, *outage, *kills = 24, 2000, 3*time.Second, 2
	}
	dir, err := os.MkdirTemp("", "stroem-chaos-")
	check(err)
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "stroem-worker")
	build := exec.Command("go", "build", "-o", bin, "./cmd/stroem-worker")
	build.Stderr = os.Stderr
	check(build.Run())
	mark := fmt.Sprintf("chaos-%d", time.Now().UnixNano())

	// The server's recovery rules run as on a real server, with a shorter
	// heartbeat timeout: a step claimed by a supervisor that was killed
	// before it could fork the step's worker is failed by the server, as
	// in production (120 s there).
	srv := fakeserver.New(fakeserver.Options{HeartbeatTimeout: 10 * time.Second, UnmatchedStepTimeout: time.Hour})
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	defer stopSweep()
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-sweepCtx.Done():
				return
			case <-t.C:
				srv.Sweep()
			}
		}
	}()
	fail := fakeserver.RandomFailures(0.30, 1, http.StatusServiceUnavailable)
	drop := fakeserver.RandomFailures(0.03, 2, 0)
	// Lost answers: the server commits (a claim, a log batch, a start, a
	// complete) and the answer never arrives.
	lose := fakeserver.RandomFaults(0.02, 5, fakeserver.Fault{DropAnswer: true})
	rng := rand.New(rand.NewPCG(3, 4))
	var rngMu sync.Mutex
	srv.SetFault(func(r *http.Request) fakeserver.Fault {
		if f := fail(r); f.Status != 0 {
			return f
		}
		if f := drop(r); f.Drop {
			return f
		}
		if f := lose(r); f.DropAnswer {
			return f
		}
		rngMu.Lock()
		defer rngMu.Unlock()
		return fakeserver.Fault{Delay: time.Duration(rng.IntN(20)) * time.Millisecond}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()
	url := "http://" + ln.Addr().String()

	var jobs []string
	for i := range *steps {
		spec, _ := json.Marshal(map[string]any{"type": "script",
			// The output names the process: a result of another attempt
			// differs from this one's.
			"script": fmt.Sprintf("seq 1 %d; sleep 0.%d; echo \"OUTPUT: {\\\"pid\\\": $$}\"", *lines, i%5),
			"env":    map[string]string{"CHAOS_MARK": mark}})
		// One retry each, after the real server's default delay (30 s): a
		// step stranded by a lost claim answer is failed by the server's
		// heartbeat timeout and runs again.
		jobs = append(jobs, srv.AddJob(fakeserver.JobSpec{TaskName: fmt.Sprintf("chaos-%d", i),
			Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: spec, Retries: 1, RetryDelaySecs: 30}}}))
	}
	env := append(os.Environ(), "STROEM__SERVER_URL="+url, "STROEM__WORKER_TOKEN="+fakeserver.DefaultToken,
		"STROEM__WORKSPACE_DIR="+filepath.Join(dir, "ws"), "STROEM__POLL_INTERVAL_SECS=0.1",
		"STROEM__MAX_CONCURRENT=4", "STROEM__DELIVERY_TIMEOUT_SECS=120", "STROEM__LOG_LEVEL=error",
		"STROEM__HEARTBEAT_INTERVAL_SECS=2")
	logf, err := os.Create(filepath.Join(dir, "worker.log"))
	check(err)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "supervise")
		cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, dir, logf, logf
		check(cmd.Start())
		return cmd
	}
	fmt.Fprintf(os.Stderr, "chaos: %d steps of %d lines, 30%% 503s, 3%% dropped connections, 2%% lost answers, %v outage, %d child kills, one supervisor kill\n",
		*steps, *lines, *outage, *kills)
	began := time.Now()
	sup := start()
	done := func() int {
		n := 0
		for _, j := range jobs {
			if st, _ := srv.Step(j, "s"); st.Status == "completed" || st.Status == "failed" {
				n++
			}
		}
		return n
	}
	waitDone := func(n int) {
		for done() < n {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			srv.WaitFor(ctx, func(*fakeserver.Server) bool { return done() >= n })
			cancel()
		}
	}
	// Kill some child workers as steps go by.
	for k := range *kills {
		waitDone((k + 1) * *steps / (*kills + 3))
		if pids := childrenOf(sup.Process.Pid); len(pids) > 0 {
			syscall.Kill(pids[0], syscall.SIGKILL)
			fmt.Fprintf(os.Stderr, "  killed child worker %d\n", pids[0])
		}
	}
	// An outage; the server comes back without its cancel set.
	srv.Down(true)
	fmt.Fprintf(os.Stderr, "  server down for %v\n", *outage)
	time.Sleep(*outage)
	srv.ForgetCancels()
	srv.Down(false)
	// The supervisor dies mid-run and is restarted.
	waitDone(done() + 2)
	sup.Process.Kill()
	sup.Wait()
	fmt.Fprintln(os.Stderr, "  supervisor SIGKILLed; restarting it")
	sup = start()

	deadline := time.Now().Add(10 * time.Minute)
	if *quick {
		deadline = time.Now().Add(2 * time.Minute)
	}
	for done() < len(jobs) && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.WaitFor(ctx, func(*fakeserver.Server) bool { return done() == len(jobs) })
		cancel()
	}
	took := time.Since(began)
	sup.Process.Signal(syscall.SIGTERM)
	sup.Wait()

	// Tally.
	var completed, failed, recovered, stuck, missing, dups, delivered, extraCompletes, stale, reattempts int
	for _, j := range jobs {
		st, _ := srv.Step(j, "s")
		reattempts += len(st.Attempts) - 1
		for _, a := range st.Attempts {
			// More than one complete in an attempt is a result resent after
			// its answer was lost (the same result again), or one of another
			// attempt arriving late (a different result: its process's pid).
			extraCompletes += max(0, a.Completes-1)
			seen := map[string]bool{}
			for _, r := range a.Results {
				seen[r] = true
			}
			stale += max(0, len(seen)-1)
			if len(seen) > 1 {
				fmt.Fprintf(os.Stderr, "  stale: job %s attempts:", j)
				for i, a := range st.Attempts {
					fmt.Fprintf(os.Stderr, " [%d: worker %.8s, %d claims, %d starts, results %q]", i+1, a.WorkerID, a.Claims, a.Starts, a.Results)
				}
				fmt.Fprintln(os.Stderr)
			}
		}
		seen := map[int]int{}
		for _, l := range srv.Logs(j) {
			if n, err := strconv.Atoi(l.Line); err == nil {
				seen[n]++
				if st.Status == "completed" {
					delivered++
				}
			}
		}
		for _, c := range seen {
			if c > 1 {
				dups += c - 1
			}
		}
		switch st.Status {
		case "completed":
			completed++
			for i := 1; i <= *lines; i++ {
				if seen[i] == 0 {
					missing++
				}
			}
		case "failed":
			failed++
			if strings.Contains(st.Error, "heartbeat timeout") {
				recovered++
			}
			fmt.Fprintf(os.Stderr, "  failed: job %s: %s\n", j, firstLine(st.Error))
		default:
			stuck++
			fmt.Fprintf(os.Stderr, "  stuck: job %s: %s, worker %s, %d claims, %d starts, %d completes\n", j, st.Status, st.WorkerID, st.Claims, st.Starts, st.Completes)
		}
	}
	left := marked(mark)
	fmt.Printf("| Chaos run (%d steps × %d lines, %v) | Result |\n|---|---|\n", *steps, *lines, took.Round(time.Second))
	fmt.Printf("| steps completed / failed / stuck | %d / %d / %d |\n", completed, failed, stuck)
	fmt.Printf("| of the failed: claimed by the killed supervisor, failed by server recovery | %d |\n", recovered)
	fmt.Printf("| lines delivered / expected from completed steps | %d / %d |\n", delivered, completed**lines)
	fmt.Printf("| lines missing from completed steps | %d |\n", missing)
	fmt.Printf("| duplicate lines (retried after a lost answer) | %d |\n", dups)
	fmt.Printf("| steps run again by the server (retry after recovery) | %d |\n", reattempts)
	fmt.Printf("| completes beyond one per attempt (resent after a lost answer) | %d |\n", extraCompletes-stale)
	fmt.Printf("| stale completions (another attempt's result) | %d |\n", stale)
	fmt.Printf("| step processes left running | %d |\n", len(left))
	if missing > 0 || stuck > 0 || stale > 0 || len(left) > 0 {
		for _, p := range left {
			syscall.Kill(p, syscall.SIGKILL)
		}
		fmt.Fprintln(os.Stderr, "chaos: FAIL")
		os.Exit(1)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// childrenOf lists pid's live children.
func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		s := string(data)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && f[0] != "Z" && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// marked lists live processes whose environment holds the run's mark.
func marked(mark string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == os.Getpid() {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p))
		if err == nil && strings.Contains(string(data), "CHAOS_MARK="+mark) {
			out = append(out, p)
		}
	}
	return out
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}
