package oneshot

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

var outputPrefix = []byte("OUTPUT:")

// parseOutputLine returns the JSON value of a stdout line that starts, at
// column 0, with "OUTPUT:" (contract §4), or why it is not one. Lines with
// invalid JSON are ignored, as the server's own worker does.
func parseOutputLine(line []byte) (json.RawMessage, string) {
	if !bytes.HasPrefix(line, outputPrefix) {
		return nil, "no OUTPUT: prefix"
	}
	rest := bytes.TrimSpace(line[len(outputPrefix):])
	if len(rest) == 0 {
		return nil, "nothing after OUTPUT:"
	}
	if !json.Valid(rest) {
		var v any
		return nil, json.Unmarshal(rest, &v).Error()
	}
	return json.RawMessage(bytes.Clone(rest)), ""
}

// stderrTail keeps the last bytes of stderr for the completion error,
// capped so that the completion body stays far below the server's 2 MiB
// limit (contract §5 notes the reference worker sends all of it and gets
// 413 on large stderr).
type stderrTail struct {
	max     int
	lines   [][]byte
	size    int
	dropped int
}

func newStderrTail(max int) *stderrTail { return &stderrTail{max: max} }

func (t *stderrTail) add(line []byte) {
	if len(line) > t.max {
		t.dropped += len(line) - t.max
		line = line[len(line)-t.max:]
	}
	t.lines = append(t.lines, bytes.Clone(line))
	t.size += len(line) + 1
	for t.size > t.max && len(t.lines) > 1 {
		t.size -= len(t.lines[0]) + 1
		t.dropped += len(t.lines[0]) + 1
		t.lines[0] = nil
		t.lines = t.lines[1:]
	}
}

func (t *stderrTail) String() string {
	var b strings.Builder
	if t.dropped > 0 {
		fmt.Fprintf(&b, "[%d bytes of earlier stderr omitted]\n", t.dropped)
	}
	for i, l := range t.lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.Write(l)
	}
	return b.String()
}
