// Command bench measures stroem-worker on this machine, each figure beside
// its physical baseline measured in the same run, and prints a markdown
// table. Run from the repository root:
//
//	go run ./scripts/bench            # full run (a few minutes)
//	go run ./scripts/bench -quick     # small sizes, for CI
//	go run ./scripts/bench -only docker   # the Docker runner (root; starts its own dockerd)
//
// Everything talks to the built-in fake server on 127.0.0.1.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

var (
	quick    = flag.Bool("quick", false, "small sizes (CI)")
	idleSecs = flag.Int("idle", 60, "seconds to watch an idle supervisor")
	only     = flag.String("only", "", "comma-separated sections to run: lines,steps,pickup,logs,cancel,workspace,idle,docker (default all but docker)")
	withDock = flag.Bool("docker", false, "also measure the Docker runner on a private dockerd (needs root, docker.io and busybox-static)")
)

type row struct{ metric, value, baseline, target string }

var rows []row

func add(metric, value, baseline, target string) {
	rows = append(rows, row{metric, value, baseline, target})
	fmt.Fprintf(os.Stderr, "  %s: %s (baseline %s)\n", metric, value, baseline)
}

func main() {
	flag.Parse()
	if *compare {
		compareMain()
		return
	}
	dir, err := os.MkdirTemp("", "stroem-bench-")
	check(err)
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "stroem-worker")
	build := exec.Command("go", "build", "-o", bin, "./cmd/stroem-worker")
	build.Stderr = os.Stderr
	check(build.Run())

	want := func(s string) bool {
		if s == "docker" && *withDock {
			return true
		}
		return *only == "" && s != "docker" || slices.Contains(strings.Split(*only, ","), s)
	}
	b := &bench{bin: bin, dir: dir}
	if want("lines") {
		b.lines()
	}
	if want("steps") {
		b.steps()
	}
	if want("pickup") {
		b.pickup()
	}
	if want("logs") {
		b.logs()
	}
	if want("cancel") {
		b.cancel()
	}
	if want("workspace") {
		b.workspace()
	}
	if want("idle") {
		b.idle()
	}
	if want("docker") {
		b.docker()
	}
	printTable()
}

type bench struct {
	bin, dir string
}

// server starts a fake server on loopback that counts log lines instead
// of keeping them (so gigabytes of output can pass through).
type server struct {
	*fakeserver.Server
	url   string
	close func()
	lines atomic.Int64
	bytes atomic.Int64
	// check, when set, sees every delivered line.
	check func(jobID string, rec fakeserver.LogRecord)
}

func (b *bench) server() *server { return b.newServer(false) }

// sinkServer is a server whose log endpoint only counts records.
func (b *bench) sinkServer() *server { return b.newServer(true) }

func (b *bench) newServer(sink bool) *server {
	s := &server{}
	s.Server = fakeserver.New(fakeserver.Options{OnLog: func(jobID string, recs []fakeserver.LogRecord) {
		for _, r := range recs {
			s.lines.Add(1)
			s.bytes.Add(int64(len(r.Line)) + 1)
			if s.check != nil {
				s.check(jobID, r)
			}
		}
	}})
	s.AddWorkspace(fakeserver.DefaultWorkspace, "", fakeserver.EmptyTarball())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	hs := &http.Server{Handler: s.Server}
	if sink {
		// Log batches are counted, not decoded: the Go fake server decodes
		// JSON at about 60 MB/s on this machine, which would measure it
		// rather than the worker. Everything else goes to the fake server.
		hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/logs") {
				s.Server.ServeHTTP(w, r)
				return
			}
			body, err := io.ReadAll(r.Body)
			if err != nil || !bytes.HasPrefix(body, []byte(`{"step_name":`)) || !bytes.HasSuffix(body, []byte("]}")) {
				http.Error(w, "bad body", http.StatusBadRequest)
				return
			}
			s.lines.Add(int64(bytes.Count(body, []byte(`{"ts":"`))))
			s.bytes.Add(int64(len(body)))
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"ok"}`)
		})
	}
	go hs.Serve(ln)
	s.url = "http://" + ln.Addr().String()
	s.close = func() { hs.Close() }
	return s
}

func (b *bench) env(s *server, extra ...string) []string {
	ws := filepath.Join(b.dir, fmt.Sprintf("ws-%d", time.Now().UnixNano()))
	return append(append(os.Environ(),
		"STROEM__SERVER_URL="+s.url, "STROEM__WORKER_TOKEN="+fakeserver.DefaultToken,
		"STROEM__WORKSPACE_DIR="+ws, "STROEM__LOG_LEVEL=warn"), extra...)
}

func script(s string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"type": "script", "script": s})
	return b
}

func job(name, sh string) fakeserver.JobSpec {
	return fakeserver.JobSpec{TaskName: name, Steps: []fakeserver.StepSpec{{StepName: "s", ActionName: name, ActionSpec: script(sh)}}}
}

// claimAndRun runs one claim-and-run and returns its wall time and peak RSS.
func (b *bench) claimAndRun(s *server) (time.Duration, int64) {
	cmd := exec.Command(b.bin, "claim-and-run")
	cmd.Env = b.env(s)
	cmd.Dir = b.dir
	cmd.Stderr = os.Stderr
	start := time.Now()
	check(cmd.Run())
	return time.Since(start), maxRSS(cmd)
}

// maxRSS is a finished command's peak RSS in KiB.
func maxRSS(cmd *exec.Cmd) int64 { return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss }

// lines: a step printing 1,000,000 numbered lines; every line must
// arrive, in order.
func (b *bench) lines() {
	n := 1_000_000
	if *quick {
		n = 100_000
	}
	fmt.Fprintf(os.Stderr, "lines: %d numbered lines through claim-and-run\n", n)
	s := b.server()
	defer s.close()
	var next atomic.Int64
	var bad atomic.Int64
	next.Store(1)
	s.check = func(_ string, r fakeserver.LogRecord) {
		if r.Line != strconv.FormatInt(next.Load(), 10) {
			bad.Add(1)
		}
		next.Add(1)
	}
	id := s.AddJob(job("lines", fmt.Sprintf("seq 1 %d", n)))
	d, rss := b.claimAndRun(s)
	st, _ := s.Step(id, "s")
	got := next.Load() - 1
	add(fmt.Sprintf("%d-line step: lines delivered / out of order", n), fmt.Sprintf("%d / %d", got, bad.Load()), fmt.Sprint(n), "all, in order")
	add(fmt.Sprintf("%d-line step: wall time, worker peak RSS", n), fmt.Sprintf("%.2f s, %.1f MB", d.Seconds(), float64(rss)/1024), "-", "RSS < 50 MB")
	if st.Status != "completed" || got != int64(n) || bad.Load() != 0 {
		fmt.Fprintf(os.Stderr, "FAIL: step %s, %d lines, %d out of order\n", st.Status, got, bad.Load())
		os.Exit(1)
	}
}

// steps: N `true` steps through supervise, beside spawning sh -c true.
func (b *bench) steps() {
	n := 500
	if *quick {
		n = 100
	}
	base1 := spawnRate(n, 1)
	base4 := spawnRate(n, 4)
	for _, conc := range []int{1, 4} {
		fmt.Fprintf(os.Stderr, "steps: %d true steps at max_concurrent %d\n", n, conc)
		s := b.server()
		ids := make([]string, n)
		for i := range ids {
			ids[i] = s.AddJob(job("t", "true"))
		}
		cmd := exec.Command(b.bin, "supervise")
		cmd.Env = b.env(s, "STROEM__MAX_CONCURRENT="+strconv.Itoa(conc), "STROEM__POLL_INTERVAL_SECS=0.5")
		cmd.Dir = b.dir
		cmd.Stderr = os.Stderr
		start := time.Now()
		check(cmd.Start())
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		err := s.WaitFor(ctx, func(s *fakeserver.Server) bool {
			for _, id := range ids {
				if st, _ := s.Step(id, "s"); st.Status != "completed" {
					return false
				}
			}
			return true
		})
		cancel()
		d := time.Since(start)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		s.close()
		check(err)
		base := base1
		if conc == 4 {
			base = base4
		}
		add(fmt.Sprintf("`true` steps/s, supervise, max_concurrent %d", conc), fmt.Sprintf("%.0f", float64(n)/d.Seconds()),
			fmt.Sprintf("%.0f/s `sh -c true` ×%d", base, conc), map[int]string{1: "-", 4: "≥ 200/s"}[conc])
	}
}

// spawnRate is how many `sh -c true` per second conc goroutines start.
func spawnRate(n, conc int) float64 {
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(n))
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				check(exec.Command("sh", "-c", "true").Run())
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// pickup: from a step becoming ready to its process printing, with
// poll_interval_secs 1 and an idle supervisor.
func (b *bench) pickup() {
	n := 30
	if *quick {
		n = 8
	}
	fmt.Fprintf(os.Stderr, "pickup: %d steps, poll 1 s\n", n)
	s := b.server()
	defer s.close()
	var mu sync.Mutex
	first := map[string]time.Time{}
	s.check = func(jobID string, r fakeserver.LogRecord) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := first[jobID]; !ok {
			t, err := time.Parse(time.RFC3339Nano, r.Line)
			if err == nil {
				first[jobID] = t
			}
		}
	}
	cmd := exec.Command(b.bin, "supervise")
	cmd.Env = b.env(s, "STROEM__POLL_INTERVAL_SECS=1", "STROEM__MAX_CONCURRENT=1")
	cmd.Dir = b.dir
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	var lat []time.Duration
	for i := range n {
		// Spread arrivals over the poll interval.
		time.Sleep(time.Duration(1000+i*137%1000) * time.Millisecond)
		ready := time.Now()
		id := s.AddJob(job("p", `date -u +%Y-%m-%dT%H:%M:%S.%NZ`))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		check(s.WaitFor(ctx, func(s *fakeserver.Server) bool { st, _ := s.Step(id, "s"); return st.Status == "completed" }))
		cancel()
		mu.Lock()
		lat = append(lat, first[id].Sub(ready))
		mu.Unlock()
	}
	slices.Sort(lat)
	add("pickup latency p50 / p99 (poll 1 s)", fmt.Sprintf("%d / %d ms", lat[len(lat)/2].Milliseconds(), lat[len(lat)*99/100].Milliseconds()),
		"poll interval 1000 ms", "p50 < 500 ms")
}

// logs: throughput and peak RSS for large outputs, beside the same
// generator writing to /dev/null.
func (b *bench) logs() {
	sizes := []int{10, 100, 1000}
	if *quick {
		sizes = []int{10, 50}
	}
	line := strings.Repeat("x", 99) // 100 bytes with the newline
	for _, mb := range sizes {
		n := mb << 20 / 100
		fmt.Fprintf(os.Stderr, "logs: %d MB (%d lines) through claim-and-run\n", mb, n)
		gen := fmt.Sprintf("yes %s | head -n %d", line, n)
		start := time.Now()
		check(exec.Command("sh", "-c", gen+" > /dev/null").Run())
		base := time.Since(start)
		s := b.sinkServer()
		s.AddJob(job("logs", gen))
		d, rss := b.claimAndRun(s)
		got := s.lines.Load()
		s.close()
		add(fmt.Sprintf("%d MB of output (100-byte lines): throughput, worker peak RSS", mb),
			fmt.Sprintf("%.0f MB/s, %.1f MB", float64(n*100)/(1<<20)/d.Seconds(), float64(rss)/1024),
			fmt.Sprintf("%.0f MB/s to /dev/null", float64(mb)/base.Seconds()), "≥ 100 MB/s, RSS < 64 MB")
		if got != int64(n) {
			fmt.Fprintf(os.Stderr, "FAIL: %d lines delivered, want %d\n", got, n)
			os.Exit(1)
		}
	}
}

// cancel: from the cancel flag set to the failure reported, with
// cancel_poll_interval_secs 1 and a step that exits on SIGTERM.
func (b *bench) cancel() {
	n := 10
	if *quick {
		n = 3
	}
	fmt.Fprintf(os.Stderr, "cancel: %d cancellations, cancel poll 1 s\n", n)
	s := b.server()
	defer s.close()
	cmd := exec.Command(b.bin, "supervise")
	cmd.Env = b.env(s, "STROEM__CANCEL_POLL_INTERVAL_SECS=1", "STROEM__POLL_INTERVAL_SECS=0.1")
	cmd.Dir = b.dir
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	var lat []time.Duration
	for range n {
		id := s.AddJob(job("c", "echo up; sleep 300"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		check(s.WaitFor(ctx, func(fs *fakeserver.Server) bool { return stepLogged(fs, id) }))
		t0 := time.Now()
		s.CancelJob(id)
		check(s.WaitFor(ctx, func(s *fakeserver.Server) bool { st, _ := s.Step(id, "s"); return st.Completes > 0 }))
		cancel()
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	add("cancel latency p50 / max (poll 1 s, flag set → failure reported)", fmt.Sprintf("%d / %d ms", lat[len(lat)/2].Milliseconds(), lat[len(lat)-1].Milliseconds()), "cancel poll 1000 ms", "-")
}

func stepLogged(s *fakeserver.Server, id string) bool {
	st, _ := s.Step(id, "s")
	return st.Starts > 0
}

// workspace: from the claim to the step's start report for a workspace of
// 50 MB (200 files of pseudo-random bytes, so gzip cannot shrink it),
// with a cold cache (download and extract) and a warm one (same revision).
func (b *bench) workspace() {
	mb := 50
	if *quick {
		mb = 5
	}
	fmt.Fprintf(os.Stderr, "workspace: %d MB tarball, cold and warm cache\n", mb)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	rng := rand.New(rand.NewPCG(1, 2))
	chunk := make([]byte, mb<<20/200)
	for i := range 200 {
		for j := 0; j+8 <= len(chunk); j += 8 {
			binary.LittleEndian.PutUint64(chunk[j:], rng.Uint64())
		}
		check(tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/f%03d.bin", i), Mode: 0o644, Size: int64(len(chunk)), Typeflag: tar.TypeReg}))
		_, err := tw.Write(chunk)
		check(err)
	}
	check(tw.Close())
	check(zw.Close())
	s := b.server()
	defer s.close()
	rev := s.AddWorkspace(fakeserver.DefaultWorkspace, "", buf.Bytes())
	env := b.env(s)
	var got []time.Duration
	for range 2 {
		id := s.AddJob(fakeserver.JobSpec{TaskName: "ws", Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: script("true"), Revision: rev}}})
		cmd := exec.Command(b.bin, "claim-and-run")
		cmd.Env, cmd.Dir, cmd.Stderr = env, b.dir, os.Stderr
		check(cmd.Run())
		var claimed, started time.Time
		for _, r := range s.Requests() {
			switch {
			case r.Path == "/worker/jobs/claim" && r.Status == http.StatusOK:
				claimed = r.Time
			case strings.HasSuffix(r.Path, "/steps/s/start") && strings.Contains(r.Path, id):
				started = r.Time
			}
		}
		got = append(got, started.Sub(claimed))
	}
	add(fmt.Sprintf("claim → step start, %d MB workspace: cold / warm cache", mb),
		fmt.Sprintf("%.1f / %.1f ms", float64(got[0].Microseconds())/1000, float64(got[1].Microseconds())/1000), "-", "-")
}

// idle: CPU and RSS of an idle supervisor over idleSecs.
func (b *bench) idle() {
	secs := *idleSecs
	if *quick {
		secs = min(secs, 10)
	}
	fmt.Fprintf(os.Stderr, "idle: supervise for %d s with no work (poll 2 s)\n", secs)
	s := b.server()
	defer s.close()
	cmd := exec.Command(b.bin, "supervise")
	cmd.Env = b.env(s)
	cmd.Dir = b.dir
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	time.Sleep(2 * time.Second) // past start-up
	cpu0 := cpuTicks(cmd.Process.Pid)
	t0 := time.Now()
	time.Sleep(time.Duration(secs) * time.Second)
	cpu1 := cpuTicks(cmd.Process.Pid)
	rss := statusKB(cmd.Process.Pid, "VmRSS:")
	el := time.Since(t0).Seconds()
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	pct := float64(cpu1-cpu0) / 100 / el * 100 // 100 ticks per second
	add(fmt.Sprintf("idle supervise over %d s: CPU, RSS", secs), fmt.Sprintf("%.3f%% of a core, %.1f MB", pct, float64(rss)/1024), "-", "< 0.1%, < 20 MB")
}

func cpuTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	check(err)
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

func statusKB(pid int, key string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check(err)
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

func printTable() {
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
	fmt.Printf("Measured %s on %s: %d cores (%s), %s, %s/%s.\n\n", time.Now().UTC().Format("2006-01-02"), host, runtime.NumCPU(), cpu, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Println("| Metric | stroem-worker | Baseline (same run) | Target |")
	fmt.Println("|---|---|---|---|")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s | %s |\n", r.metric, r.value, r.baseline, r.target)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
