package logstream_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
)

const stepName = "step [0]"

func newSpool(t *testing.T) (*logstream.Spool, string) {
	t.Helper()
	root := t.TempDir()
	sp, err := logstream.Create(root, "job-1_step", logstream.Meta{JobID: "job-1", StepName: stepName, WorkerID: "w"})
	if err != nil {
		t.Fatalf("Create() = %v", err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp, root
}

// records reads logs.jsonl back as wire lines.
func records(t *testing.T, dir string) []api.LogLine {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "logs.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []api.LogLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l api.LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("record %q is not JSON: %v", sc.Bytes(), err)
		}
		out = append(out, l)
	}
	return out
}

func TestRecordEncoding(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name   string
		stream string
		ts     time.Time
		line   string
		want   api.LogLine
	}{
		{"plain", "stdout", ts, "Hello Alice!", ll("2026-03-01T10:00:00.123456789Z", "stdout", "Hello Alice!")},
		{"quotes and backslashes", "stderr", ts, `say "hi" \ C:\dir`, ll("2026-03-01T10:00:00.123456789Z", "stderr", `say "hi" \ C:\dir`)},
		{"control chars", "stdout", ts, "tab\tnl\ncr\rnul\x00esc\x1b\x1f\x7f", ll("2026-03-01T10:00:00.123456789Z", "stdout", "tab\tnl\ncr\rnul\x00esc\x1b\x1f\x7f")},
		{"line separators", "stdout", ts, "a\u2028b\u2029c", ll("2026-03-01T10:00:00.123456789Z", "stdout", "a\u2028b\u2029c")},
		{"emoji and html", "stdout", ts, "🙂 <b>&amp;</b> ø", ll("2026-03-01T10:00:00.123456789Z", "stdout", "🙂 <b>&amp;</b> ø")},
		{"empty", "stdout", ts, "", ll("2026-03-01T10:00:00.123456789Z", "stdout", "")},
		{"invalid utf8 from a caller", "stdout", ts, "a\xffb", ll("2026-03-01T10:00:00.123456789Z", "stdout", "a\uFFFDb")},
		{"whole second", "stdout", time.Date(2026, 3, 1, 10, 0, 1, 0, time.UTC), "x", ll("2026-03-01T10:00:01.000000000Z", "stdout", "x")},
		{"one nanosecond", "stdout", time.Date(2026, 3, 1, 10, 0, 1, 1, time.UTC), "x", ll("2026-03-01T10:00:01.000000001Z", "stdout", "x")},
		{"local time in UTC", "stdout", time.Date(2026, 3, 1, 11, 0, 0, 5e8, time.FixedZone("CET", 3600)), "x", ll("2026-03-01T10:00:00.500000000Z", "stdout", "x")},
		{"odd stream name", `my"stream`, ts, "x", ll("2026-03-01T10:00:00.123456789Z", `my"stream`, "x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sp, _ := newSpool(t)
			if err := sp.Append(tt.stream, tt.ts, []byte(tt.line)); err != nil {
				t.Fatal(err)
			}
			if err := sp.Close(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]api.LogLine{tt.want}, records(t, sp.Dir())); diff != "" {
				t.Errorf("record of %q (-want +got):\n%s", tt.line, diff)
			}
		})
	}
}

// TestAppendCutsLongLines: a caller's line longer than MaxLineBytes
// becomes several records that rejoin to it, so a record always fits.
func TestAppendCutsLongLines(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	long := strings.Repeat("é", logstream.MaxLineBytes) // 2 bytes each
	sp.Append("stdout", time.Now(), []byte(long))
	sp.Close()
	got := records(t, sp.Dir())
	var joined strings.Builder
	for _, l := range got {
		joined.WriteString(l.Line)
	}
	if len(got) != 2 || joined.String() != long {
		t.Errorf("Append of %d bytes: %d records rejoining to %d bytes, want 2 rejoining to all", len(long), len(got), joined.Len())
	}
	if sp.Lines() != 1 || sp.Bytes() != int64(len(long)) {
		t.Errorf("Lines(), Bytes() = %d, %d; want 1, %d", sp.Lines(), sp.Bytes(), len(long))
	}
}

func TestConcurrentAppend(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	const n = 5000
	var wg sync.WaitGroup
	for _, stream := range []string{"stdout", "stderr"} {
		wg.Go(func() {
			for i := range n {
				if err := sp.Append(stream, time.Now(), fmt.Appendf(nil, "%s %d", stream, i)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	sp.Close()
	next := map[string]int{}
	for _, l := range records(t, sp.Dir()) {
		if want := fmt.Sprintf("%s %d", l.Stream, next[l.Stream]); l.Line != want {
			t.Fatalf("line %q, want %q: lost or out of order within its stream", l.Line, want)
		}
		next[l.Stream]++
	}
	if diff := cmp.Diff(map[string]int{"stdout": n, "stderr": n}, next); diff != "" {
		t.Errorf("lines per stream (-want +got):\n%s", diff)
	}
	if sp.Lines() != 2*n {
		t.Errorf("Lines() = %d, want %d", sp.Lines(), 2*n)
	}
}

// TestTimedFlush: a line reaches the file within ~100 ms with no Flush or
// Close, so a crash loses little and a reader of the file sees it.
func TestTimedFlush(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		sp, _ := newSpool(t)
		sp.Append("stdout", time.Now(), []byte("soon on disk"))
		if got := records(t, sp.Dir()); len(got) != 0 {
			t.Fatalf("records before the flush interval = %v, want none (buffered)", got)
		}
		time.Sleep(150 * time.Millisecond) // fake time: the flush timer fires
		synctest.Wait()
		if got := records(t, sp.Dir()); len(got) != 1 || got[0].Line != "soon on disk" {
			t.Errorf("records after 150 ms = %v, want the line", got)
		}
		sp.Close()
	})
}

func TestAppendAfterClose(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	sp.Close()
	if err := sp.Append("stdout", time.Now(), []byte("late")); !errors.Is(err, logstream.ErrClosed) {
		t.Errorf("Append() after Close = %v, want ErrClosed", err)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		job, step string
		want      string
	}{
		{"0b6c6f2e-1d2a-4c1b-9a8e-000000000001", "greet", "0b6c6f2e-1d2a-4c1b-9a8e-000000000001_xgreet_a1"},
		{"j", "../../etc", "j_x2e2e2f2e2e2f657463_a1"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			sp, err := logstream.Create(root, tt.want, logstream.Meta{JobID: tt.job, StepName: tt.step})
			if err != nil {
				t.Fatalf("Create() = %v", err)
			}
			sp.Close()
			if filepath.Dir(sp.Dir()) != root {
				t.Errorf("spool at %s, want directly under %s", sp.Dir(), root)
			}
		})
	}
	for _, bad := range []string{"", ".", "..", "a/b", `a\b`, "a b"} {
		if _, err := logstream.Create(t.TempDir(), bad, logstream.Meta{}); err == nil {
			t.Errorf("Create(root, %q) = nil error, want refusal", bad)
		}
	}
}

func TestSpoolFiles(t *testing.T) {
	t.Parallel()
	sp, root := newSpool(t)
	sp.Append("stdout", time.Now(), []byte("x"))
	sp.Close()
	if err := sp.SaveCompletion([]byte(`{"exit_code":0,"output":null,"error":null}`)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "meta.json", "logs.jsonl", "complete.json"} {
		info, err := os.Stat(filepath.Join(sp.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%q has mode %v, want no group or other access", name, perm)
		}
	}
	again, err := logstream.Open(sp.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sp.Meta(), again.Meta()); diff != "" || again.Meta().Created.IsZero() || again.Meta().JobID != "job-1" {
		t.Errorf("Open().Meta() (-created +opened):\n%s", diff)
	}
	if body, ok := again.Completion(); !ok || string(body) != `{"exit_code":0,"output":null,"error":null}` {
		t.Errorf("Completion() = %q, %v", body, ok)
	}
	if err := again.Remove(); err != nil {
		t.Fatal(err)
	}
	if dirs, err := logstream.Pending(root); err != nil || len(dirs) != 0 {
		t.Errorf("Pending() after Remove = %v, %v; want none", dirs, err)
	}
}

func TestPendingOldestFirst(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	var want []string
	for i, key := range []string{"c", "a", "b"} {
		sp, err := logstream.Create(root, key, logstream.Meta{JobID: key})
		if err != nil {
			t.Fatal(err)
		}
		sp.Close()
		// Ages set explicitly: creation within one clock tick would tie.
		at := time.Now().Add(time.Duration(i-10) * time.Minute)
		os.Chtimes(filepath.Join(sp.Dir(), "meta.json"), at, at)
		want = append(want, sp.Dir())
	}
	os.Mkdir(filepath.Join(root, "not-a-spool"), 0o700)
	got, err := logstream.Pending(root)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Pending() (-want +got):\n%s", diff)
	}
	if _, err := logstream.Pending(filepath.Join(root, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Pending(missing) = %v, want ErrNotExist", err)
	}
}

func ll(ts, stream, line string) api.LogLine { return api.LogLine{TS: ts, Stream: stream, Line: line} }
