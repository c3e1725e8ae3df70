package logstream_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/logstream"
)

// smallFS mounts a tmpfs of size bytes and returns its path; it skips the
// test where mounting is not allowed (not root).
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// TestFullDiskKeepsLinesInMemory: once the spool's disk is full, lines go
// on from memory, in order, and none is lost while memory lasts; beyond
// the memory limit lines are counted as lost, and the log says so.
func TestFullDiskKeepsLinesInMemory(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		memLimit int
		wantLost bool
	}{
		{"within memory", logstream.MemoryLimit, false},
		{"beyond memory", 256 << 10, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := smallFS(t, 128<<10)
			sp, err := logstream.Create(root, "job_step_a", logstream.Meta{JobID: "job", StepName: stepName})
			if err != nil {
				t.Fatal(err)
			}
			logstream.SetMemoryLimit(sp, tt.memLimit)
			const n = 20000 // ~1.4 MB of records, ten times the disk
			c := &collector{}
			// The server takes nothing until every line is appended, so
			// memory fills up whatever the timing.
			gate := make(chan struct{})
			send := func(ctx context.Context, body []byte) error {
				<-gate
				return c.send(ctx, body)
			}
			done := make(chan logstream.Stats, 1)
			go func() {
				st, err := logstream.Ship(t.Context(), sp, logstream.ShipOptions{StepName: stepName, Send: send})
				if err != nil {
					t.Error(err)
				}
				done <- st
			}()
			for i := range n {
				if err := sp.Append("stdout", time.Now(), fmt.Appendf(nil, "line %05d %s", i, strings.Repeat("x", 40))); err != nil {
					t.Fatalf("Append() = %v, want nil while memory lasts (lost lines are counted)", err)
				}
			}
			sp.Close()
			close(gate)
			<-done
			if sp.Err() == nil {
				t.Fatal("Err() = nil, want the write error of the full disk")
			}
			got := texts(decode(t, c.got()))
			last := got[len(got)-1]
			if !strings.Contains(last, "could not be written to the worker's disk") {
				t.Errorf("last line = %q, want the notice", last)
			}
			got = got[:len(got)-1]
			lost := sp.Lost()
			if (lost > 0) != tt.wantLost || int64(len(got))+lost != n {
				t.Errorf("%d lines delivered, %d lost, want %d in all (lost > 0: %v)", len(got), lost, n, tt.wantLost)
			}
			if tt.wantLost && !strings.Contains(last, fmt.Sprintf("%d lines that did not fit in memory were lost", lost)) {
				t.Errorf("notice %q does not count the %d lost lines", last, lost)
			}
			for i, l := range got {
				if want := fmt.Sprintf("line %05d ", i); !strings.HasPrefix(l, want) {
					t.Fatalf("line %d = %.20q, want %q...: delivered lines must be the first ones, in order", i, l, want)
				}
			}
			if _, err := os.Stat(filepath.Join(root, "job_step_a", "logs.jsonl")); err != nil {
				t.Errorf("spool file: %v", err)
			}
		})
	}
}
