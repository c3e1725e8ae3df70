package logstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
)

// decode turns request bodies back into lines.
func decode(t *testing.T, bodies [][]byte) []api.LogLine {
	t.Helper()
	var out []api.LogLine
	for _, b := range bodies {
		var batch api.LogBatch
		if err := json.Unmarshal(b, &batch); err != nil {
			t.Fatalf("body is not JSON: %v\n%.200s", err, b)
		}
		if batch.StepName != stepName {
			t.Fatalf("step_name = %q, want %q", batch.StepName, stepName)
		}
		out = append(out, batch.Lines...)
	}
	return out
}

func texts(lines []api.LogLine) []string {
	var out []string
	for _, l := range lines {
		out = append(out, l.Line)
	}
	return out
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", prefix, i)
	}
	return out
}

// collector is a Sender that keeps accepted bodies; fail decides per call
// whether to fail, and whether the body was accepted all the same (a
// reply lost on the way back).
type collector struct {
	mu       sync.Mutex
	bodies   [][]byte
	calls    int
	lost     int // bodies accepted whose reply was an error
	fail     func(call int, body []byte) (err error, accepted bool)
	received chan struct{}
}

func (c *collector) send(_ context.Context, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	var err error
	accepted := true
	if c.fail != nil {
		err, accepted = c.fail(c.calls, body)
		accepted = err == nil || accepted
	}
	if accepted {
		c.bodies = append(c.bodies, bytes.Clone(body))
		if err != nil {
			c.lost++
		}
		if c.received != nil {
			select {
			case c.received <- struct{}{}:
			default:
			}
		}
	}
	return err
}

func (c *collector) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bodies
}

type shipResult struct {
	st  logstream.Stats
	err error
}

func shipAsync(ctx context.Context, sp *logstream.Spool, o logstream.ShipOptions) <-chan shipResult {
	done := make(chan shipResult, 1)
	go func() {
		st, err := logstream.Ship(ctx, sp, o)
		done <- shipResult{st, err}
	}()
	return done
}

// await waits for ch as long as the test may run (go test -timeout),
// less a margin to report which wait it was: how long the work takes on a
// busy machine is not this test's to guess.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	var limit <-chan time.Time
	if d, ok := t.Deadline(); ok {
		timer := time.NewTimer(time.Until(d) - 10*time.Second)
		defer timer.Stop()
		limit = timer.C
	}
	select {
	case v := <-ch:
		return v
	case <-limit:
		t.Fatalf("no %s before the test's deadline", what)
		panic("unreachable")
	}
}

// TestShipUnderFailures: live writers on both streams, a server failing
// 30% of calls (some after accepting the body): every line arrives, in
// order, each body within the batch cap, and a line arrives twice only as
// the retry of a body whose success reply was lost.
func TestShipUnderFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		maxBatch int
	}{
		{"small batches", 4 << 10},
		{"default batches", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sp, _ := newSpool(t)
			errDown := errors.New("503 service unavailable")
			c := &collector{fail: func(call int, _ []byte) (error, bool) {
				switch call % 10 {
				case 1, 4:
					return errDown, false
				case 7:
					return errDown, true
				}
				return nil, false
			}}
			done := shipAsync(t.Context(), sp, logstream.ShipOptions{StepName: stepName, Send: c.send,
				Interval: time.Millisecond, MaxBatchBytes: tt.maxBatch, RetryInitial: time.Microsecond, RetryMax: time.Millisecond})
			const n = 20000
			var wg sync.WaitGroup
			for _, stream := range []string{"stdout", "stderr"} {
				wg.Go(func() {
					for _, l := range numbered(stream, n) {
						if err := sp.Append(stream, time.Now(), []byte(l)); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			sp.Close()
			res := await(t, done, "end of Ship")
			if res.err != nil {
				t.Fatalf("Ship() = %v", res.err)
			}
			bodies := c.got()
			// A lost reply makes the shipper resend the same body: drop
			// the first of each identical pair, and the rest must be exact.
			var unique [][]byte
			dups := 0
			for i, b := range bodies {
				if i+1 < len(bodies) && bytes.Equal(b, bodies[i+1]) {
					dups++
					continue
				}
				unique = append(unique, b)
			}
			if dups != c.lost {
				t.Errorf("%d repeated bodies, want %d (one per lost reply)", dups, c.lost)
			}
			per := map[string][]string{}
			for _, l := range decode(t, unique) {
				per[l.Stream] = append(per[l.Stream], l.Line)
			}
			for _, stream := range []string{"stdout", "stderr"} {
				if diff := cmp.Diff(numbered(stream, n), per[stream]); diff != "" {
					t.Errorf("%s lines delivered (-want +got):\n%.2000s", stream, diff)
				}
			}
			limit := tt.maxBatch
			if limit == 0 {
				limit = logstream.DefaultMaxBatchBytes
			}
			for _, b := range bodies {
				if len(b) > limit {
					t.Fatalf("a body of %d bytes, over the batch cap %d", len(b), limit)
				}
			}
			want := logstream.Stats{Lines: 2 * n, Batches: int64(len(bodies) - c.lost), Retries: int64(c.calls - len(bodies) + c.lost)}
			got := res.st
			got.Bytes = 0
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Ship() stats (-want +got):\n%s", diff)
			}
		})
	}
}

// TestShipOverHTTP posts through a real HTTP server that checks the body
// as the Strøm server would (JSON, size limit) and fails now and then.
func TestShipOverHTTP(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		got   []api.LogLine
		calls int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 2<<20))
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls%3 == 0 {
			http.Error(w, `{"error":"Internal server error"}`, http.StatusInternalServerError)
			return
		}
		var batch api.LogBatch
		if err := json.Unmarshal(body, &batch); err != nil || batch.Lines == nil {
			http.Error(w, "bad body", http.StatusUnprocessableEntity)
			return
		}
		got = append(got, batch.Lines...)
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer srv.Close()
	send := func(ctx context.Context, body []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/worker/jobs/j/logs", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("posting logs: status %d", resp.StatusCode)
		}
		return nil
	}
	sp, _ := newSpool(t)
	// Worst-case records: 64 KiB lines of control characters escape to
	// six times their size; the bodies must still fit 2 MiB.
	want := []string{strings.Repeat("\x01", logstream.MaxLineBytes)}
	for i := range 30 {
		want = append(want, strings.Repeat(string(rune('a'+i%26)), logstream.MaxLineBytes), strings.Repeat("\x02", logstream.MaxLineBytes), fmt.Sprint(i))
	}
	for _, l := range want {
		sp.Append("stdout", time.Now(), []byte(l))
	}
	sp.Close()
	st, err := logstream.Ship(t.Context(), sp, logstream.ShipOptions{StepName: stepName, Send: send, RetryInitial: time.Millisecond})
	if err != nil {
		t.Fatalf("Ship() = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, texts(got)); diff != "" {
		t.Errorf("lines stored by the server differ (%d want, %d got)", len(want), len(got))
	}
	if st.Dropped != 0 || st.Lag != 0 {
		t.Errorf("Ship() stats = %+v, want nothing dropped or left", st)
	}
}

// TestShipPrompt: with a long Interval, the first line after a quiet
// spell and a full batch each go out at once, woken by Append.
func TestShipPrompt(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	c := &collector{received: make(chan struct{}, 1)}
	done := shipAsync(t.Context(), sp, logstream.ShipOptions{StepName: stepName, Send: c.send, Interval: time.Hour, MaxBatchBytes: 4 << 10})
	sp.Append("stdout", time.Now(), []byte("first"))
	await(t, c.received, "prompt send of the first line")
	if got := texts(decode(t, c.got())); !cmp.Equal(got, []string{"first"}) {
		t.Fatalf("first body lines = %q, want [first]", got)
	}
	for _, l := range numbered("line", 200) { // ~14 KiB: at least one full batch
		sp.Append("stdout", time.Now(), []byte(l))
	}
	await(t, c.received, "send of a full batch")
	sp.Close()
	if res := await(t, done, "end of Ship"); res.err != nil {
		t.Fatalf("Ship() = %v", res.err)
	}
	if got := texts(decode(t, c.got())); !cmp.Equal(got, append([]string{"first"}, numbered("line", 200)...)) {
		t.Errorf("delivered %d lines, want first and 200 in order", len(got))
	}
}

// TestPermanentRejectionIsolatesOneRecord: the server refuses one line
// for good; the batch is split, that line alone is dropped and counted.
func TestPermanentRejectionIsolatesOneRecord(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		bad  []int
	}{
		{"one in the middle", []int{6}},
		{"first and last", []int{0, 9}},
		{"all", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
	}
	errBad := errors.New("422 unprocessable")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sp, _ := newSpool(t)
			all := numbered("line", 10)
			for _, l := range all {
				sp.Append("stdout", time.Now(), []byte(l))
			}
			sp.Close()
			var want []string
			refuse := map[string]bool{}
			for i, l := range all {
				if contains(tt.bad, i) {
					refuse[fmt.Sprintf("%q", l)] = true
				} else {
					want = append(want, l)
				}
			}
			c := &collector{fail: func(_ int, body []byte) (error, bool) {
				for l := range refuse {
					if bytes.Contains(body, []byte(l)) {
						return errBad, false
					}
				}
				return nil, false
			}}
			st, err := logstream.Ship(t.Context(), sp, logstream.ShipOptions{StepName: stepName, Send: c.send,
				Permanent: func(err error) bool { return errors.Is(err, errBad) }})
			if err != nil {
				t.Fatalf("Ship() = %v", err)
			}
			if diff := cmp.Diff(want, texts(decode(t, c.got()))); diff != "" {
				t.Errorf("delivered (-want +got):\n%s", diff)
			}
			if st.Dropped != int64(len(tt.bad)) || st.Lines != int64(len(want)) || st.Lag != 0 {
				t.Errorf("Ship() stats = %+v, want %d dropped, %d lines, no lag", st, len(tt.bad), len(want))
			}
		})
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestResumeAfterInterruption: a shipper stopped half way leaves the
// spool; another process delivers the rest from logs.sent, nothing twice.
func TestResumeAfterInterruption(t *testing.T) {
	t.Parallel()
	sp, root := newSpool(t)
	for _, l := range numbered("line", 100) {
		sp.Append("stdout", time.Now(), []byte(l))
	}
	sp.Close()
	ctx, cancel := context.WithCancel(t.Context())
	first := &collector{fail: func(call int, _ []byte) (error, bool) {
		if call == 3 {
			cancel()
			return errors.New("connection reset"), false
		}
		return nil, false
	}}
	st, err := logstream.Ship(ctx, sp, logstream.ShipOptions{StepName: stepName, Send: first.send, MaxBatchBytes: 1000})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Ship() with a cancelled context = %v, want context.Canceled", err)
	}
	if st.Lag == 0 || st.Lines == 0 {
		t.Fatalf("first Ship() stats = %+v, want some lines shipped and some left", st)
	}
	dirs, err := logstream.Pending(root)
	if err != nil || len(dirs) != 1 {
		t.Fatalf("Pending() = %v, %v; want the one spool", dirs, err)
	}
	second := &collector{}
	again, st2, err := deliver(t.Context(), dirs[0], logstream.ShipOptions{Send: second.send})
	if err != nil {
		t.Fatalf("Deliver() = %v", err)
	}
	all := append(decode(t, first.got()), decode(t, second.got())...)
	if diff := cmp.Diff(numbered("line", 100), texts(all)); diff != "" {
		t.Errorf("delivered over two processes (-want +got):\n%s", diff)
	}
	if st.Lines+st2.Lines != 100 || st2.Lag != 0 {
		t.Errorf("stats %+v then %+v, want 100 lines in all and no lag", st, st2)
	}
	if err := again.Remove(); err != nil {
		t.Fatal(err)
	}
}

// TestFinishCancelledKeepsSpool: the server is down and the delivery
// deadline passes: Ship says so, and everything stays on disk.
func TestFinishCancelledKeepsSpool(t *testing.T) {
	t.Parallel()
	sp, root := newSpool(t)
	for _, l := range numbered("line", 10) {
		sp.Append("stderr", time.Now(), []byte(l))
	}
	sp.Close()
	// The delivery deadline passes after the third failed send.
	ctx, cancel := context.WithCancelCause(t.Context())
	defer cancel(nil)
	c := &collector{fail: func(call int, _ []byte) (error, bool) {
		if call == 3 {
			cancel(context.DeadlineExceeded)
		}
		return errors.New("connection refused"), false
	}}
	st, err := logstream.Ship(ctx, sp, logstream.ShipOptions{StepName: stepName, Send: c.send, RetryInitial: time.Millisecond, RetryMax: 5 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ship() = %v, want DeadlineExceeded", err)
	}
	if st.Lines != 0 || st.Lag == 0 || st.Retries == 0 {
		t.Errorf("Ship() stats = %+v, want nothing shipped, a lag, retries", st)
	}
	if dirs, _ := logstream.Pending(root); len(dirs) != 1 {
		t.Fatalf("Pending() = %v, want the spool kept", dirs)
	}
	again := &collector{}
	if _, _, err := deliver(t.Context(), sp.Dir(), logstream.ShipOptions{Send: again.send}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(numbered("line", 10), texts(decode(t, again.got()))); diff != "" {
		t.Errorf("delivered later (-want +got):\n%s", diff)
	}
}

// TestDamagedSpool: a torn last record (a crash mid-write) and a record
// too long to be real are dropped and counted; the rest is delivered.
func TestDamagedSpool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		middle string // written between two good records
		tail   string // written after them
	}{
		{"torn last record", "", `{"ts":"2026`},
		{"garbage too long for a record", strings.Repeat("z", 3<<20) + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sp, _ := newSpool(t)
			sp.Append("stdout", time.Now(), []byte("before"))
			sp.Close()
			f, err := os.OpenFile(filepath.Join(sp.Dir(), "logs.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tt.middle)
			f.WriteString(`{"ts":"2026-03-01T10:00:00.000000000Z","stream":"stdout","line":"after"}` + "\n")
			f.WriteString(tt.tail)
			f.Close()
			c := &collector{}
			_, st, err := deliver(t.Context(), sp.Dir(), logstream.ShipOptions{Send: c.send})
			if err != nil {
				t.Fatalf("Deliver() = %v", err)
			}
			if diff := cmp.Diff([]string{"before", "after"}, texts(decode(t, c.got()))); diff != "" || st.Dropped != 1 || st.Lag != 0 {
				t.Errorf("delivered (-want +got):\n%s\nstats %+v, want one dropped, no lag", diff, st)
			}
		})
	}
}

func BenchmarkSpoolAppendShip(b *testing.B) {
	const n = 1_000_000
	line := bytes.Repeat([]byte("x"), 99)
	var size int64
	for b.Loop() {
		sp, err := logstream.Create(b.TempDir(), "k", logstream.Meta{JobID: "j", StepName: "s"})
		if err != nil {
			b.Fatal(err)
		}
		var sent int64
		done := shipAsync(context.Background(), sp, logstream.ShipOptions{StepName: "s",
			Send: func(_ context.Context, body []byte) error { sent += int64(len(body)); return nil }})
		start := time.Now()
		for i := range n {
			sp.Append("stdout", start.Add(time.Duration(i)*time.Microsecond), line)
		}
		sp.Close()
		if res := <-done; res.err != nil || res.st.Lines != n {
			b.Fatalf("Ship() = %+v, %v", res.st, res.err)
		}
		size = sent
	}
	b.SetBytes(100 * n) // line bytes, newline included
	b.ReportMetric(float64(size)/n, "wire-B/line")
}

func BenchmarkAppend(b *testing.B) {
	line := bytes.Repeat([]byte("x"), 99)
	sp, err := logstream.Create(b.TempDir(), "k", logstream.Meta{})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	now := time.Now()
	b.SetBytes(100)
	for b.Loop() {
		sp.Append("stdout", now, line)
	}
}

// deliver ships what is left of a spool another process left behind, as
// package delivery does: open it, ship it from its acknowledged offset.
func deliver(ctx context.Context, dir string, o logstream.ShipOptions) (*logstream.Spool, logstream.Stats, error) {
	sp, err := logstream.Open(dir)
	if err != nil {
		return nil, logstream.Stats{}, err
	}
	if o.StepName == "" {
		o.StepName = sp.Meta().StepName
	}
	st, err := logstream.Ship(ctx, sp, o)
	return sp, st, err
}

// TestFatalErrorStopsShipping: a rejected token is not retried until the
// deadline; Ship returns it at once and the spool keeps the lines.
func TestFatalErrorStopsShipping(t *testing.T) {
	t.Parallel()
	sp, _ := newSpool(t)
	sp.Append("stdout", time.Now(), []byte("x"))
	sp.Close()
	rejected := api.ErrUnauthorized
	c := &collector{fail: func(int, []byte) (error, bool) { return rejected, false }}
	_, err := logstream.Ship(t.Context(), sp, logstream.ShipOptions{StepName: stepName, Send: c.send,
		Fatal: func(err error) bool { return errors.Is(err, api.ErrUnauthorized) }})
	if !errors.Is(err, api.ErrUnauthorized) {
		t.Fatalf("Ship() = %v, want the token rejection at once", err)
	}
	if n := len(c.got()); n != 0 {
		t.Errorf("%d batches accepted, want none", n)
	}
}
