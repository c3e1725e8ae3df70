package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
)

// dockerBench: the Docker runner's figures on a private engine the bench
// starts (and stops): the per-step overhead of a `true` container step
// through claim-and-run beside `docker run --rm` of the same image, and
// log throughput from a container. Skipped, with the reason, where no
// engine can run.
func (b *bench) docker() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	fmt.Fprintln(os.Stderr, "docker: starting a private engine")
	eng, err := dockertest.Start(ctx, dockertest.Options{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "  "+f+"\n", a...) }})
	var u *dockertest.UnavailableError
	if errors.As(err, &u) {
		fmt.Fprintf(os.Stderr, "docker: skipped: %v\n", u)
		add("Docker runner figures", "skipped: "+u.Reason, "-", "-")
		return
	}
	check(err)
	defer func() {
		if err := eng.Stop(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "docker: stopping the engine:", err)
		}
	}()
	net := "none" // the private dockerd has no bridge; podman's default would be CNI
	extra := []string{"STROEM__CAPABILITIES=script,docker", "STROEM__DOCKER__HOST=" + eng.Host(), "STROEM__DOCKER__NETWORK=" + net}

	// Per-step overhead: claim-and-run of a `true` docker step (claim,
	// start report, create, attach, start, wait, remove, complete, and the
	// process's own start-up with its engine check) beside `docker run
	// --rm --network none IMAGE true` (create, attach, start, wait, remove
	// by the daemon). Interleaved, medians.
	n := 15
	if *quick {
		n = 5
	}
	cli, cliErr := exec.LookPath("docker")
	var worker, plain []time.Duration
	for i := 0; i < n; i++ {
		s := b.server()
		spec, _ := json.Marshal(map[string]any{"type": "docker", "command": []string{"true"}})
		id := s.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionType: "docker",
			ActionImage: dockertest.ImageBusybox, ActionSpec: spec}}})
		d, _ := b.claimAndRunEnv(s, extra...)
		st, _ := s.Step(id, "s")
		s.close()
		if st.Status != "completed" {
			fmt.Fprintf(os.Stderr, "FAIL: docker step %s: %s\n", st.Status, st.Error)
			os.Exit(1)
		}
		worker = append(worker, d)
		if cliErr == nil {
			cmd := exec.Command(cli, "run", "--rm", "--network", net, dockertest.ImageBusybox, "true")
			cmd.Env = append(os.Environ(), "DOCKER_HOST="+eng.Host())
			cmd.Stderr = os.Stderr
			start := time.Now()
			check(cmd.Run())
			plain = append(plain, time.Since(start))
		}
	}
	mw := median(worker)
	base, verdict := "docker CLI not found", "-"
	if cliErr == nil {
		mp := median(plain)
		base = fmt.Sprintf("%.0f ms `docker run --rm`", ms(mp))
		verdict = fmt.Sprintf("%+.0f%%", 100*(mw.Seconds()/mp.Seconds()-1))
	}
	add(fmt.Sprintf("`true` Docker step through claim-and-run, median of %d (vs docker run)", n),
		fmt.Sprintf("%.0f ms (%s)", ms(mw), verdict), base, "within 15%")

	// Throughput: 100-byte lines from a container, through attach, the
	// line splitter and the spool, to the (counting) server; the whole
	// claim-and-run's wall time. Two writers: stdio's 4 KiB writes into a
	// pipe (most programs), where the engine's per-write cost sets the
	// pace, and the same lines re-blocked into 64 KiB writes, where the
	// worker's own cost shows. Baseline: `docker run` of the same
	// generator to /dev/null (the CLI as the only reader, logging off).
	mb := 100
	if *quick {
		mb = 20
	}
	lines := mb << 20 / 100
	for _, w := range []struct{ name, gen string }{
		{"4 KiB writes", fmt.Sprintf("yes %s | head -n %d", strings.Repeat("x", 99), lines)},
		{"64 KiB writes", fmt.Sprintf("yes %s | head -n %d | dd bs=65536 iflag=fullblock 2>/dev/null", strings.Repeat("x", 99), lines)},
	} {
		s := b.sinkServer()
		spec, _ := json.Marshal(map[string]any{"type": "docker", "cmd": w.gen})
		s.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionType: "docker",
			ActionImage: dockertest.ImageBusybox, ActionSpec: spec}}})
		d, rss := b.claimAndRunEnv(s, extra...)
		got := s.lines.Load()
		s.close()
		base := "docker CLI not found"
		if cliErr == nil {
			cmd := exec.Command(cli, "run", "--rm", "--network", net, "--log-driver", "none", dockertest.ImageBusybox, "sh", "-c", w.gen)
			cmd.Env = append(os.Environ(), "DOCKER_HOST="+eng.Host())
			cmd.Stdout = io.Discard
			start := time.Now()
			check(cmd.Run())
			base = fmt.Sprintf("%.0f MB/s `docker run` to /dev/null", float64(mb)/time.Since(start).Seconds())
		}
		add(fmt.Sprintf("%d MB from a container, 100-byte lines in %s: throughput, worker peak RSS", mb, w.name),
			fmt.Sprintf("%.0f MB/s, %.1f MB", float64(mb)/d.Seconds(), float64(rss)/1024), base, "≥ 50 MB/s")
		if got != int64(lines) {
			fmt.Fprintf(os.Stderr, "FAIL: %d lines delivered from the container, want %d\n", got, lines)
			os.Exit(1)
		}
	}
}

// claimAndRunEnv is claimAndRun with extra environment.
func (b *bench) claimAndRunEnv(s *server, extra ...string) (time.Duration, int64) {
	cmd := exec.Command(b.bin, "claim-and-run")
	cmd.Env = b.env(s, extra...)
	cmd.Dir = b.dir
	cmd.Stderr = os.Stderr
	start := time.Now()
	check(cmd.Run())
	return time.Since(start), maxRSS(cmd)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
