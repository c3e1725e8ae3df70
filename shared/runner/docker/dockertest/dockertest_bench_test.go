package dockertest_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
)

// Baselines for the Docker runner's own benchmarks. Run with
//
//	go test -run '^$' -bench . -benchtime 5x ./shared/runner/docker/dockertest/

// BenchmarkStart is a whole private engine: dockerd to /_ping, the image
// import, and Stop.
func BenchmarkStart(b *testing.B) {
	var ready, images, stop time.Duration
	for b.Loop() {
		eng, err := dockertest.Start(b.Context(), dockertest.Options{})
		var u *dockertest.UnavailableError
		if errors.As(err, &u) {
			b.Skip(err)
		}
		if err != nil {
			b.Fatal(err)
		}
		begin := time.Now()
		if err := eng.Stop(b.Context()); err != nil {
			b.Fatal(err)
		}
		stop += time.Since(begin)
		ready += eng.Timings().Ready
		images += eng.Timings().Images
	}
	n := float64(b.N)
	b.ReportMetric(float64(ready.Milliseconds())/n, "ready-ms/op")
	b.ReportMetric(float64(images.Milliseconds())/n, "images-ms/op")
	b.ReportMetric(float64(stop.Milliseconds())/n, "stop-ms/op")
}

// BenchmarkTrueContainer is create → start → wait → remove of `true`
// with no network and no attach: the fixed cost of one container step.
func BenchmarkTrueContainer(b *testing.B) {
	eng := dockertest.Shared(b)
	ctx := b.Context()
	for b.Loop() {
		id, err := create(ctx, eng, container{Image: dockertest.ImageBusybox, Cmd: []string{"true"}})
		if err != nil {
			b.Fatal(err)
		}
		if err := start(ctx, eng, id); err != nil {
			b.Fatal(err)
		}
		if exit, err := wait(ctx, eng, id); err != nil || exit != 0 {
			b.Fatalf("wait = %d, %v", exit, err)
		}
		if err := remove(ctx, eng, id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttachThroughput streams stdout through attach and the
// multiplexed-stream demux, with the engine's default json-file log driver
// (every line is also encoded to JSON and written to disk, in the same
// pipeline: the slower consumer sets the pace) and with logging off.
// MB/s counts the whole run (create to remove); stream-MB/s only the first
// to the last byte received; lost-B/op is what never arrived: dockerd
// gives the stream copiers 2 s after the process exits, then closes them.
func BenchmarkAttachThroughput(b *testing.B) {
	eng := dockertest.Shared(b)
	line100 := strings.Repeat("x", 99)
	producers := []struct {
		name string
		size int
		cmd  string
	}{
		{"dd-64KiB-writes", 64 << 20, fmt.Sprintf("dd if=/dev/zero bs=65536 count=%d 2>/dev/null", 64<<20/65536)},
		{"yes-100B-lines", 16 << 20, fmt.Sprintf("yes %s | head -c %d", line100, 16<<20)},
		{"yes-2B-lines", 2 << 20, fmt.Sprintf("yes | head -c %d", 2<<20)},
	}
	for _, p := range producers {
		for _, logType := range []string{"json-file", "none"} {
			b.Run(p.name+"/"+logType, func(b *testing.B) {
				b.SetBytes(int64(p.size))
				var streaming time.Duration
				var received, lost int64
				for b.Loop() {
					w := &firstByte{}
					exit, err := run(b.Context(), eng, container{
						Image:   dockertest.ImageBusybox,
						Cmd:     []string{"sh", "-c", p.cmd},
						LogType: logType,
					}, w, io.Discard)
					if err != nil || exit != 0 {
						b.Fatalf("run = %d, %v", exit, err)
					}
					streaming += w.last.Sub(w.first)
					received += w.n
					lost += int64(p.size) - w.n
				}
				b.ReportMetric(float64(received)/streaming.Seconds()/1e6, "stream-MB/s")
				b.ReportMetric(float64(lost)/float64(b.N), "lost-B/op")
			})
		}
	}
}

// firstByte counts what it is given and remembers when the first and the
// last write came.
type firstByte struct {
	n           int64
	first, last time.Time
}

func (w *firstByte) Write(p []byte) (int, error) {
	w.last = time.Now()
	if w.n == 0 {
		w.first = w.last
	}
	w.n += int64(len(p))
	return len(p), nil
}
