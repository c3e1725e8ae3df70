package logstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func lines(t *testing.T, in string, max int) []string {
	t.Helper()
	var out []string
	if err := logstream.ReadLines(strings.NewReader(in), max, func(l []byte) { out = append(out, string(l)) }); err != nil {
		t.Fatalf("ReadLines() = %v", err)
	}
	return out
}

func TestReadLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"plain", "a\nb\n", 0, []string{"a", "b"}},
		{"crlf", "a\r\nb\r\n", 0, []string{"a", "b"}},
		{"lone cr kept", "a\rb\n", 0, []string{"a\rb"}},
		{"no trailing newline", "a\nb", 0, []string{"a", "b"}},
		{"empty lines", "\n\na\n", 0, []string{"", "", "a"}},
		{"empty input", "", 0, nil},
		{"invalid utf8", "ok \xff\xfe end\n", 0, []string{"ok \uFFFD end"}},
		{"binary", "\x00\x01\x02\n", 0, []string{"\x00\x01\x02"}},
		{"long line split", strings.Repeat("x", 40) + "\n", 16, []string{strings.Repeat("x", 16), strings.Repeat("x", 16), strings.Repeat("x", 8)}},
		{"split on rune boundary", "aaaaaaaaaaaaaaé€x\n", 16, []string{"aaaaaaaaaaaaaaé", "€x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, lines(t, tt.in, tt.max)); diff != "" {
				t.Errorf("ReadLines(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// TestReadLinesLosesNoByte rejoins long, multi-byte lines of many sizes.
func TestReadLinesLosesNoByte(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1, 15, 16, 17, 100, 1000} {
		line := strings.Repeat("ab€ç", size)
		got := lines(t, line+"\nnext\n", 64)
		if joined := strings.Join(got[:len(got)-1], ""); joined != line || got[len(got)-1] != "next" {
			t.Fatalf("size %d: rejoined %d bytes, want %d, then next", size, len(joined), len(line))
		}
		for _, l := range got {
			if len(l) > 64 || !utf8.ValidString(l) {
				t.Fatalf("size %d: line %q: over the cap or cut inside a character", size, l)
			}
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestReadLinesError(t *testing.T) {
	t.Parallel()
	err := logstream.ReadLines(io.MultiReader(strings.NewReader("a\n"), failingReader{}), 0, func([]byte) {})
	if err == nil || err.Error() != "boom" {
		t.Errorf("ReadLines() = %v, want the read error", err)
	}
}

// decode turns request bodies back into lines.
func decode(t *testing.T, bodies [][]byte) []api.LogLine {
	t.Helper()
	var out []api.LogLine
	for _, b := range bodies {
		var batch api.LogBatch
		if err := json.Unmarshal(b, &batch); err != nil {
			t.Fatalf("body is not JSON: %v\n%s", err, b)
		}
		if batch.StepName != "step [0]" {
			t.Fatalf("step_name = %q", batch.StepName)
		}
		out = append(out, batch.Lines...)
	}
	return out
}

// collector is a Sender that keeps bodies; fail decides per call.
type collector struct {
	mu     sync.Mutex
	bodies [][]byte
	calls  int
	fail   func(call int, body []byte) error
}

func (c *collector) send(_ context.Context, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.fail != nil {
		if err := c.fail(c.calls, body); err != nil {
			return err
		}
	}
	c.bodies = append(c.bodies, bytes.Clone(body))
	return nil
}

func newSpool(t *testing.T) (*logstream.Spool, string) {
	t.Helper()
	root := t.TempDir()
	sp, err := logstream.Create(root, "job_73746570", logstream.Meta{JobID: "job", StepName: "step [0]"})
	if err != nil {
		t.Fatal(err)
	}
	return sp, root
}

func TestRecordsRoundTrip(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	tricky := []string{`quote " and \ backslash`, "tab\tnew\nline", "ctrl \x01\x1f", "U+2028 \u2028", "emoji 🙂", "", "<html>&amp;</html>"}
	ts := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	for i, l := range tricky {
		stream := []string{"stdout", "stderr"}[i%2]
		if err := sp.Append(stream, ts, []byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	c := &collector{}
	if _, err := logstream.Ship(t.Context(), sp, logstream.ShipOptions{StepName: "step [0]", Send: c.send}); err != nil {
		t.Fatalf("Ship() = %v", err)
	}
	var want []api.LogLine
	for i, l := range tricky {
		want = append(want, api.LogLine{TS: "2026-03-01T10:00:00.123456789Z", Stream: []string{"stdout", "stderr"}[i%2], Line: l})
	}
	if diff := cmp.Diff(want, decode(t, c.bodies)); diff != "" {
		t.Errorf("delivered lines (-want +got):\n%s", diff)
	}
}

// TestShipUnderFailures: a live writer, a server failing 30% of calls:
// every line arrives, in order, in bodies within the batch cap.
func TestShipUnderFailures(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	c := &collector{fail: func(call int, _ []byte) error {
		if call%10 < 3 {
			return errors.New("503")
		}
		return nil
	}}
	const n, maxBatch = 20000, 8 << 10
	done := make(chan error, 1)
	go func() {
		_, err := logstream.Ship(t.Context(), sp, logstream.ShipOptions{StepName: "step [0]", Send: c.send,
			Interval: 5 * time.Millisecond, MaxBatchBytes: maxBatch, RetryInitial: time.Millisecond, RetryMax: 2 * time.Millisecond})
		done <- err
	}()
	for i := range n {
		if err := sp.Append("stdout", time.Now(), fmt.Appendf(nil, "line %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	if err := <-done; err != nil {
		t.Fatalf("Ship() = %v", err)
	}
	got := decode(t, c.bodies)
	if len(got) != n {
		t.Fatalf("delivered %d lines, want %d", len(got), n)
	}
	for i, l := range got {
		if l.Line != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d = %q: out of order", i, l.Line)
		}
	}
	for _, b := range c.bodies {
		if len(b) > maxBatch+200 {
			t.Fatalf("a body of %d bytes, over the batch cap %d plus one record", len(b), maxBatch)
		}
	}
}

// TestPermanentRejectionIsolatesOneRecord: the server refuses one line;
// that line alone is dropped and counted.
func TestPermanentRejectionIsolatesOneRecord(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	for i := range 10 {
		sp.Append("stdout", time.Now(), fmt.Appendf(nil, "line %d", i))
	}
	sp.Close()
	errBad := errors.New("422")
	c := &collector{fail: func(_ int, body []byte) error {
		if bytes.Contains(body, []byte(`"line 6"`)) {
			return errBad
		}
		return nil
	}}
	st, err := logstream.Ship(t.Context(), sp, logstream.ShipOptions{StepName: "step [0]", Send: c.send,
		Permanent: func(err error) bool { return errors.Is(err, errBad) }})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range decode(t, c.bodies) {
		got = append(got, l.Line)
	}
	want := []string{"line 0", "line 1", "line 2", "line 3", "line 4", "line 5", "line 7", "line 8", "line 9"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if st.Dropped != 1 {
		t.Errorf("Dropped = %d, want 1", st.Dropped)
	}
}

// TestResumeAfterInterruption: a shipper stopped half way leaves the
// spool; another process opens it and delivers the rest, nothing twice.
func TestResumeAfterInterruption(t *testing.T) {
	t.Parallel()
	sp, root := newSpool(t)
	for i := range 100 {
		sp.Append("stdout", time.Now(), fmt.Appendf(nil, "line %d", i))
	}
	sp.Close()
	ctx, cancel := context.WithCancel(t.Context())
	first := &collector{fail: func(call int, _ []byte) error {
		if call == 3 {
			cancel()
			return errors.New("connection reset")
		}
		return nil
	}}
	_, err := logstream.Ship(ctx, sp, logstream.ShipOptions{StepName: "step [0]", Send: first.send, MaxBatchBytes: 1000})
	if err == nil {
		t.Fatal("Ship() with a cancelled context = nil, want an error")
	}
	dirs, err := logstream.Pending(root)
	if err != nil || len(dirs) != 1 {
		t.Fatalf("Pending() = %v, %v; want the one spool", dirs, err)
	}
	again, err := logstream.Open(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	second := &collector{}
	if _, err := logstream.Ship(t.Context(), again, logstream.ShipOptions{StepName: "step [0]", Send: second.send}); err != nil {
		t.Fatal(err)
	}
	all := append(decode(t, first.bodies), decode(t, second.bodies)...)
	if len(all) != 100 {
		t.Fatalf("delivered %d lines over two processes, want 100", len(all))
	}
	for i, l := range all {
		if l.Line != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d = %q", i, l.Line)
		}
	}
	if err := again.SaveCompletion([]byte(`{"exit_code":0}`)); err != nil {
		t.Fatal(err)
	}
	if body, ok := again.Completion(); !ok || string(body) != `{"exit_code":0}` {
		t.Errorf("Completion() = %q, %v", body, ok)
	}
	if err := again.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dirs[0]); !os.IsNotExist(err) {
		t.Errorf("spool still there after Remove: %v", err)
	}
}

func TestTornLastRecord(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	sp.Append("stdout", time.Now(), []byte("whole"))
	sp.Close()
	f, err := os.OpenFile(filepath.Join(sp.Dir(), "logs.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"ts":"2026`)
	f.Close()
	again, _ := logstream.Open(sp.Dir())
	c := &collector{}
	st, err := logstream.Ship(t.Context(), again, logstream.ShipOptions{StepName: "step [0]", Send: c.send})
	if err != nil {
		t.Fatalf("Ship() = %v", err)
	}
	if got := decode(t, c.bodies); len(got) != 1 || got[0].Line != "whole" || st.Dropped != 1 {
		t.Errorf("delivered %+v, dropped %d; want the whole line and the torn one counted", got, st.Dropped)
	}
}

func TestFilesArePrivate(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	sp.Append("stdout", time.Now(), []byte("x"))
	sp.Close()
	for _, name := range []string{"", "meta.json", "logs.jsonl"} {
		info, err := os.Stat(filepath.Join(sp.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", name, perm)
		}
	}
}

func BenchmarkAppendShip(b *testing.B) {
	line := bytes.Repeat([]byte("x"), 99)
	for b.Loop() {
		sp, err := logstream.Create(b.TempDir(), "k", logstream.Meta{JobID: "j", StepName: "s"})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := logstream.Ship(context.Background(), sp, logstream.ShipOptions{StepName: "s",
				Send: func(context.Context, []byte) error { return nil }})
			done <- err
		}()
		now := time.Now()
		for range 1_000_000 {
			sp.Append("stdout", now, line)
		}
		sp.Close()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(100 * 1_000_000)
}

func BenchmarkReadLines(b *testing.B) {
	data := bytes.Repeat(append(bytes.Repeat([]byte("y"), 99), '\n'), 100_000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		logstream.ReadLines(bytes.NewReader(data), 0, func([]byte) {})
	}
}
