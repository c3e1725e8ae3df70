package logstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// MaxLineBytes is the longest line emitted; longer ones are cut. It keeps
// one encoded record (at most six bytes per byte once escaped) far below
// the server's 2 MiB body limit.
const MaxLineBytes = 64 << 10

// readBufferSize is the bufio buffer: large enough that ordinary lines are
// emitted straight from it with one ReadSlice and no copy.
const readBufferSize = 64 << 10

// ReadLines reads r to EOF and calls emit for each line, without its
// '\n' or '\r\n'. A line longer than maxLine bytes (MaxLineBytes if
// maxLine <= 0) is emitted as several, cut on a UTF-8 boundary so that
// rejoining them gives the original bytes; invalid UTF-8 becomes U+FFFD
// rather than stopping the read (a stopped reader would leave the child
// blocked on a full pipe); a last line without '\n' is emitted at EOF.
// It returns nil at EOF and the read error otherwise, wrapped, so that
// errors.Is(err, os.ErrClosed) tells a pipe closed on purpose. The slice
// given to emit is only valid during the call.
func ReadLines(r io.Reader, maxLine int, emit func(line []byte)) error {
	if maxLine <= 0 {
		maxLine = MaxLineBytes
	}
	// A piece must be able to hold a whole rune, or a cut could not move
	// back to a boundary.
	maxLine = max(maxLine, utf8.UTFMax)
	sp := splitter{maxLine: maxLine, emit: emit}
	br := bufio.NewReaderSize(r, readBufferSize)
	// long holds the not yet emitted start of a line longer than the
	// buffer; it is reused, so only the first long line allocates.
	var long []byte
	for {
		chunk, err := br.ReadSlice('\n')
		switch {
		case err == nil:
			line := chunk[:len(chunk)-1]
			if len(long) > 0 {
				long = append(long, line...)
				line = long
				long = long[:0]
			}
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			sp.out(line)
		case errors.Is(err, bufio.ErrBufferFull):
			long = append(long, chunk...)
			// Emit only what is surely not the end of the line: the kept
			// tail (more than maxLine+1 bytes are never kept) lets a '\r'
			// before the coming '\n' be stripped, and a line of exactly
			// maxLine bytes stay one line instead of gaining an empty one.
			start := 0
			for len(long)-start > maxLine+1 {
				cut := start + runeCut(long[start:], maxLine)
				sp.out(long[start:cut])
				start = cut
			}
			long = long[:copy(long, long[start:])]
		default:
			long = append(long, chunk...)
			if len(long) > 0 {
				sp.out(long)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("reading lines: %w", err)
		}
	}
}

// splitter emits valid, capped lines; fixed is reused scratch for the
// repaired copy of invalid input.
type splitter struct {
	maxLine int
	emit    func([]byte)
	fixed   []byte
}

// out emits data repaired to valid UTF-8 and cut to maxLine. Repair can
// lengthen data (one bad byte becomes three), hence the cut after it.
func (sp *splitter) out(data []byte) {
	if !utf8.Valid(data) {
		sp.fixed = appendValidUTF8(sp.fixed[:0], data)
		data = sp.fixed
	}
	for len(data) > sp.maxLine {
		cut := runeCut(data, sp.maxLine)
		sp.emit(data[:cut])
		data = data[cut:]
	}
	sp.emit(data)
}

// appendValidUTF8 appends s with each run of invalid bytes replaced by one
// U+FFFD, as bytes.ToValidUTF8 does, but into a reusable buffer.
func appendValidUTF8(dst, s []byte) []byte {
	bad := false
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			bad = false
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			if !bad {
				dst = append(dst, "\uFFFD"...)
			}
			bad = true
			i++
			continue
		}
		dst = append(dst, s[i:i+size]...)
		i += size
		bad = false
	}
	return dst
}

// runeCut returns the largest cut point at or before n that does not end
// data[:cut] inside a UTF-8 sequence that may still be completed (n itself
// when data[:n] ends on a boundary or on bytes that are invalid anyway).
func runeCut(data []byte, n int) int {
	n = min(n, len(data))
	for back := 1; back <= utf8.UTFMax && n-back >= 0; back++ {
		start := n - back
		if !utf8.RuneStart(data[start]) {
			continue
		}
		if utf8.FullRune(data[start:n]) || start == 0 {
			return n
		}
		return start
	}
	return n
}

// LineWriter is ReadLines for output that arrives in writes rather than
// from a reader (frames of a multiplexed stream): whatever the writes,
// the lines are those ReadLines reads from the same bytes (only a line
// over the cap holding invalid UTF-8 may be cut at other points, each
// piece still valid and capped). The start of an unfinished line waits
// for the next Write; Close emits a last line without '\n'. Not safe for
// concurrent use.
type LineWriter struct {
	sp    splitter
	carry []byte
}

// NewLineWriter returns a LineWriter calling emit for each line, cut at
// maxLine bytes (MaxLineBytes if maxLine <= 0). The slice given to emit is
// only valid during the call.
func NewLineWriter(maxLine int, emit func(line []byte)) *LineWriter {
	if maxLine <= 0 {
		maxLine = MaxLineBytes
	}
	return &LineWriter{sp: splitter{maxLine: max(maxLine, utf8.UTFMax), emit: emit}}
}

// Write emits the lines p completes. It never fails.
func (w *LineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.carry = append(w.carry, p...)
			w.cutLong()
			break
		}
		line := p[:i]
		if len(w.carry) > 0 {
			w.carry = append(w.carry, line...)
			line = w.carry
		}
		if k := len(line); k > 0 && line[k-1] == '\r' {
			line = line[:k-1]
		}
		w.sp.out(line)
		w.carry = w.carry[:0]
		p = p[i+1:]
	}
	return n, nil
}

// cutLong emits what is surely not the end of an unfinished line, as
// ReadLines does for a line longer than its buffer: more than maxLine+1
// bytes are never kept.
func (w *LineWriter) cutLong() {
	start := 0
	for len(w.carry)-start > w.sp.maxLine+1 {
		cut := start + runeCut(w.carry[start:], w.sp.maxLine)
		w.sp.out(w.carry[start:cut])
		start = cut
	}
	if start > 0 {
		w.carry = w.carry[:copy(w.carry, w.carry[start:])]
	}
}

// Close emits the unfinished last line, if any.
func (w *LineWriter) Close() error {
	if len(w.carry) > 0 {
		w.sp.out(w.carry)
		w.carry = w.carry[:0]
	}
	return nil
}
