package logstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"unicode/utf8"
)

// MaxLineBytes is the longest line emitted; longer ones are cut.
const MaxLineBytes = 64 << 10

// ReadLines reads r to EOF and calls emit for each line, without its
// '\n' or '\r\n'. A line longer than maxLine bytes is emitted as several,
// cut on a UTF-8 boundary; invalid UTF-8 becomes U+FFFD; a last line
// without '\n' is emitted at EOF. It returns nil at EOF and the read error
// otherwise. The slice given to emit is only valid during the call.
func ReadLines(r io.Reader, maxLine int, emit func(line []byte)) error {
	if maxLine <= 0 {
		maxLine = MaxLineBytes
	}
	br := bufio.NewReaderSize(r, maxLine)
	var carry []byte // the start of a rune cut off at the end of a long chunk
	for {
		chunk, err := br.ReadSlice('\n')
		data := chunk
		complete := err == nil
		if complete {
			data = chunk[:len(chunk)-1]
			if n := len(data); n > 0 && data[n-1] == '\r' {
				data = data[:n-1]
			}
		}
		if len(carry) > 0 {
			data = append(carry, data...)
			carry = nil
		}
		switch {
		case complete:
			emitValid(data, maxLine, emit)
		case errors.Is(err, bufio.ErrBufferFull):
			cut := runeCut(data, min(len(data), maxLine))
			emitValid(data[:cut], maxLine, emit)
			carry = append([]byte(nil), data[cut:]...)
		default:
			if len(data) > 0 {
				emitValid(data, maxLine, emit)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// emitValid emits data, repaired to valid UTF-8 and cut to maxLine.
func emitValid(data []byte, maxLine int, emit func([]byte)) {
	if !utf8.Valid(data) {
		data = bytes.ToValidUTF8(data, []byte("\uFFFD"))
	}
	for len(data) > maxLine {
		cut := runeCut(data, maxLine)
		emit(data[:cut])
		data = data[cut:]
	}
	emit(data)
}

// runeCut returns the largest cut point at or before n that ends data[:cut]
// on a whole UTF-8 sequence (n itself for invalid input that has none).
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
