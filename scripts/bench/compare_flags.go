package main

import (
	"flag"
	"os"
	"path/filepath"
)

// Flags of the compare mode (compare_linux.go). Defaults are those of the
// real server that ../shared/realserver/ builds and starts
// (REALSERVER_DIR=... start.sh): the URL, its test token, and the Rust
// release worker under $REALSERVER_DIR/bin. Each may come from the
// environment instead.
var (
	compare     = flag.Bool("compare", false, "compare mode: our worker beside a second worker binary (-rust) on one Strøm server (-server), instead of the fake-server figures")
	cmpServer   = flag.String("server", envOr("STROEM_BENCH_SERVER", "http://127.0.0.1:18080"), "compare: the server URL the workers use (env STROEM_BENCH_SERVER)")
	cmpAPI      = flag.String("api", os.Getenv("STROEM_BENCH_API"), "compare: base URL of the server's /api, without /api (env STROEM_BENCH_API; default -server)")
	cmpToken    = flag.String("token", envOr("STROEM_BENCH_TOKEN", "test-worker-token-0123456789abcdef0123"), "compare: the worker token (env STROEM_BENCH_TOKEN; default the real-server recipe's test token)")
	cmpWS       = flag.String("workspace", "default", "compare: workspace holding the bench tasks")
	cmpNoop     = flag.String("noop-task", "bench-noop", "compare: a task of one step running `true`")
	cmpSleep    = flag.String("sleep-task", "bench-sleep", "compare: a task of one step running `sleep {{ input.secs }}` (scripts/bench/compare-workflow.yaml)")
	cmpOurs     = flag.String("ours", ".", "compare: our worker: a binary, or a source tree to build ./cmd/stroem-worker from")
	cmpRust     = flag.String("rust", defaultRust(), "compare: the second worker's binary (env STROEM_BENCH_RUST; default $REALSERVER_DIR/bin/stroem-worker-rust-release); \"\" measures ours alone")
	cmpSteps    = flag.Int("steps", 300, "compare: `true` steps per steps/s run")
	cmpRounds   = flag.Int("rounds", 3, "compare: rounds; each runs every measurement for each worker, alternating which goes first")
	cmpPickups  = flag.Int("pickups", 30, "compare: pickup samples per worker, spread over the rounds")
	cmpSrvProcs = flag.String("server-procs", "stroem-server,postgres", "compare: names of the server's processes on this machine, whose CPU is shown for context")
	cmpPerf     = flag.String("perf", "", "compare: after the rounds, one more max_concurrent 4 steps run per worker under `perf record -e cpu-clock -g`, written to this directory (not in the table)")
	cmpKeep     = flag.Bool("keep", false, "compare: keep the run directory (worker configs and logs)")
)

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func defaultRust() string {
	if v := os.Getenv("STROEM_BENCH_RUST"); v != "" {
		return v
	}
	dir := os.Getenv("REALSERVER_DIR")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "stroem-realserver")
	}
	bin := filepath.Join(dir, "bin", "stroem-worker-rust-release")
	if _, err := os.Stat(bin); err != nil {
		return ""
	}
	return bin
}
