package logstream_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// readAll runs ReadLines over in and returns the lines.
func readAll(t *testing.T, in string, max int) []string {
	t.Helper()
	var out []string
	if err := logstream.ReadLines(strings.NewReader(in), max, func(l []byte) { out = append(out, string(l)) }); err != nil {
		t.Fatalf("ReadLines() = %v, want nil", err)
	}
	return out
}

func TestReadLines(t *testing.T) {
	t.Parallel()
	x16 := strings.Repeat("x", 16)
	tests := []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"plain", "a\nb\n", 0, []string{"a", "b"}},
		{"crlf", "a\r\nb\r\n", 0, []string{"a", "b"}},
		{"only one cr stripped", "a\r\r\n", 0, []string{"a\r"}},
		{"lone cr kept", "a\rb\n", 0, []string{"a\rb"}},
		{"no trailing newline", "a\nb", 0, []string{"a", "b"}},
		{"empty lines", "\n\na\n\n", 0, []string{"", "", "a", ""}},
		{"empty input", "", 0, nil},
		{"invalid utf8 run is one replacement", "ok \xff\xfe end\n", 0, []string{"ok \uFFFD end"}},
		{"truncated rune", "a\xe2\x82\n", 0, []string{"a\uFFFD"}},
		{"binary", "\x00\x01\x02\x7f\n", 0, []string{"\x00\x01\x02\x7f"}},
		{"long line split", strings.Repeat("x", 40) + "\n", 16, []string{x16, x16, "xxxxxxxx"}},
		{"exactly max is one line", x16 + "\n" + x16, 16, []string{x16, x16}},
		{"exactly max with crlf", x16 + "\r\n", 16, []string{x16}},
		{"max plus one", x16 + "y\n", 16, []string{x16, "y"}},
		{"split on rune boundary", "aaaaaaaaaaaaaaé€x\n", 16, []string{"aaaaaaaaaaaaaaé", "€x"}},
		{"emoji not cut", "aaaaaaaaaaaaaa🙂b\n", 16, []string{"aaaaaaaaaaaaaa", "🙂b"}},
		{"max below a rune is raised", "🙂🙂\n", 1, []string{"🙂", "🙂"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, readAll(t, tt.in, tt.max)); diff != "" {
				t.Errorf("ReadLines(%q, %d) (-want +got):\n%s", tt.in, tt.max, diff)
			}
		})
	}
}

// TestReadLinesLosesNoByte rejoins long, multi-byte lines of many sizes,
// around the cap and around the 64 KiB read buffer.
func TestReadLinesLosesNoByte(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		max   int
		sizes []int // repeats of a 10-byte unit
	}{
		{"small cap", 64, []int{1, 6, 7, 100, 10000}},
		{"default cap", 0, []int{6553, 6554, 6600, 13107, 13108, 30000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			limit := tt.max
			if limit == 0 {
				limit = logstream.MaxLineBytes
			}
			for _, size := range tt.sizes {
				line := strings.Repeat("ab€ç🙂", size) // 12 bytes: lands on every offset
				got := readAll(t, line+"\r\nnext\n", tt.max)
				if joined := strings.Join(got[:len(got)-1], ""); joined != line || got[len(got)-1] != "next" {
					t.Fatalf("size %d: rejoined %d bytes, want %d, then next", size, len(joined), len(line))
				}
				for _, l := range got {
					if len(l) > limit || !utf8.ValidString(l) {
						t.Fatalf("size %d: a line of %d bytes: over the cap %d or cut inside a character", size, len(l), limit)
					}
				}
			}
		})
	}
}

// TestReadLinesInvalidAcrossBuffer: invalid bytes in a line longer than
// the read buffer are replaced, and every line stays valid and capped.
func TestReadLinesInvalidAcrossBuffer(t *testing.T) {
	t.Parallel()
	in := bytes.Repeat([]byte("a\xffb\xe2\x82"), 100_000)
	var n int
	err := logstream.ReadLines(bytes.NewReader(in), 0, func(l []byte) {
		n++
		if len(l) > logstream.MaxLineBytes || !utf8.Valid(l) {
			t.Fatalf("line %d: %d bytes, valid %v", n, len(l), utf8.Valid(l))
		}
	})
	if err != nil || n < 2 {
		t.Fatalf("ReadLines() = %v after %d lines, want nil after several", err, n)
	}
}

type errAfter struct {
	r   io.Reader
	err error
}

func (e errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestReadLinesError(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		err  error
	}{
		{"read error", errBoom},
		{"pipe closed", os.ErrClosed},
		{"deadline", os.ErrDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			err := logstream.ReadLines(errAfter{strings.NewReader("a\npartial"), tt.err}, 0, func(l []byte) { got = append(got, string(l)) })
			if !errors.Is(err, tt.err) {
				t.Errorf("ReadLines() = %v, want %v", err, tt.err)
			}
			if diff := cmp.Diff([]string{"a", "partial"}, got); diff != "" {
				t.Errorf("lines before the error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestReadLinesAllocs: the cost of a line is not an allocation.
func TestReadLinesAllocs(t *testing.T) {
	data := bytes.Repeat([]byte(strings.Repeat("y", 99)+"\n"), 10_000)
	allocs := testing.AllocsPerRun(5, func() {
		logstream.ReadLines(bytes.NewReader(data), 0, func([]byte) {})
	})
	if allocs > 5 {
		t.Errorf("ReadLines of 10000 lines: %v allocations, want a few per call", allocs)
	}
}

func BenchmarkReadLines(b *testing.B) {
	data := bytes.Repeat(append(bytes.Repeat([]byte("y"), 99), '\n'), 100_000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := logstream.ReadLines(bytes.NewReader(data), 0, func([]byte) {}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestLineWriterIsReadLines: whatever the writes are cut into, a
// LineWriter emits the lines ReadLines reads from the same bytes.
func TestLineWriterIsReadLines(t *testing.T) {
	t.Parallel()
	x16 := strings.Repeat("x", 16)
	inputs := []struct {
		in  string
		max int
	}{
		{"a\nb\n", 0}, {"a\r\nb\r\n", 0}, {"a\r\r\n", 0}, {"a\rb\n", 0}, {"a\nb", 0}, {"a\nb\r", 0},
		{"\n\na\n\n", 0}, {"", 0}, {"ok \xff\xfe end\n", 0}, {"a\xe2\x82\n", 0}, {"\x00\x01\x02\x7f\n", 0},
		{strings.Repeat("x", 40) + "\n", 16}, {x16 + "\n" + x16, 16}, {x16 + "\r\n", 16}, {x16 + "y\n", 16},
		{"aaaaaaaaaaaaaaé€x\n", 16}, {"aaaaaaaaaaaaaa🙂b\n", 16}, {"🙂🙂\n", 1},
		{strings.Repeat("ab€ç🙂", 100) + "\r\nnext\n", 64},
		{strings.Repeat("ab€ç🙂", 13108) + "\r\nnext\n" + strings.Repeat("é", 70000), 0},
		{string(bytes.Repeat([]byte("a\xffb\xe2\x82"), 30_000)), 200_000},
	}
	for i, tt := range inputs {
		want := readAll(t, tt.in, tt.max)
		for _, size := range []int{1, 3, 7, 4096, 65536, len(tt.in) + 1} {
			var got []string
			w := logstream.NewLineWriter(tt.max, func(l []byte) { got = append(got, string(l)) })
			for rest := tt.in; len(rest) > 0; {
				n := min(size, len(rest))
				w.Write([]byte(rest[:n]))
				rest = rest[n:]
			}
			w.Close()
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("input %d in writes of %d bytes (-ReadLines +LineWriter):\n%s", i, size, diff)
			}
		}
	}
	// Invalid bytes in a line longer than the cap: the pieces may be cut
	// elsewhere than ReadLines cuts them, but each is valid and capped.
	in := bytes.Repeat([]byte("a\xffb\xe2\x82"), 30_000)
	n := 0
	w := logstream.NewLineWriter(0, func(l []byte) {
		n++
		if len(l) > logstream.MaxLineBytes || !utf8.Valid(l) {
			t.Fatalf("line %d: %d bytes, valid %v", n, len(l), utf8.Valid(l))
		}
	})
	w.Write(in)
	w.Close()
	if n < 2 {
		t.Errorf("%d lines from %d bytes, want several", n, len(in))
	}
}
