package logstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/stroem-worker/stroem-worker/shared/atomicfile"
)

// Spool files.
const (
	metaFile       = "meta.json"
	logsFile       = "logs.jsonl"
	sentFile       = "logs.sent"
	completionFile = "complete.json"
)

// MemoryLimit bounds the records a spool keeps in memory once its file
// cannot be written (a full disk): lines beyond it are counted as lost.
const MemoryLimit = 16 << 20

const (
	// writeBufferSize is how much Append buffers before writing to the file.
	writeBufferSize = 64 << 10
	// flushEvery bounds how long an appended line may sit in memory: what
	// a crash can lose, and how stale the file can be for a reader.
	flushEvery = 100 * time.Millisecond
	// maxStreamBytes bounds the stream name, so one record stays bounded.
	maxStreamBytes = 64
	// tsLayout is RFC 3339 in UTC with a fixed nanosecond fraction, the
	// form the server's own worker sends.
	tsLayout = "2006-01-02T15:04:05.000000000Z"
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("spool is closed")

// Meta identifies the step a spool belongs to.
type Meta struct {
	JobID    string    `json:"job_id"`
	StepName string    `json:"step_name"`
	WorkerID string    `json:"worker_id"`
	Created  time.Time `json:"created"`
}

// Spool is one step's log and result on disk. Append is safe for
// concurrent use (stdout and stderr readers); one shipper reads it.
type Spool struct {
	dir  string
	meta Meta

	mu      sync.Mutex
	f       *os.File // logs.jsonl, append side; nil once closed
	buf     []byte   // records appended but not yet written to f
	fileEnd int64    // bytes of whole records in f
	total   int64    // record bytes appended (in f, buf or mem)
	sent    int64    // record bytes the server acknowledged
	lines   int64    // lines appended
	text    int64    // line bytes appended (before encoding)
	closed  bool
	// err is the first error writing f. From then on records are kept in
	// mem (from logical offset memBase) until the shipper has them, up to
	// memLimit bytes; lines that do not fit are counted in lost.
	err      error
	mem      []byte
	memBase  int64
	memLimit int
	lost     int64
	enc      []byte // record encoding scratch
	tsSec    int64  // the second tsPrefix was formatted for
	tsPrefix []byte // `{"ts":"2006-01-02T15:04:05.` of tsSec
	flush    *time.Timer
	armed    bool // flush is pending

	// wakeAt is the appended size at which Append wakes the shipper; the
	// shipper sets it (any new data when idle, a full batch otherwise), so
	// an Append costs one comparison and never a channel send per line.
	wakeAt int64
	notify chan struct{}
}

// safeName reports whether key is one harmless path element.
func safeName(key string) bool {
	if key == "" || key == "." || key == ".." || len(key) > 200 {
		return false
	}
	for _, c := range []byte(key) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return false
		}
	}
	return true
}

// Create makes a new spool for a step at root/key (directories 0700,
// files 0600: logs may hold secrets the redactor missed). key must be a
// path-safe name such as Key returns. A spool of the same key left by an
// earlier attempt of the step is replaced whole.
func Create(root, key string, meta Meta) (*Spool, error) {
	if !safeName(key) {
		return nil, fmt.Errorf("creating spool: unsafe key %q", key)
	}
	dir := filepath.Join(root, key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	if meta.Created.IsZero() {
		meta.Created = time.Now().UTC()
	}
	data, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	os.Remove(filepath.Join(dir, sentFile))
	os.Remove(filepath.Join(dir, completionFile))
	if err := atomicfile.Write(filepath.Join(dir, metaFile), data, atomicfile.Volatile); err != nil {
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, logsFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	s := &Spool{dir: dir, meta: meta, f: f, buf: make([]byte, 0, writeBufferSize), memLimit: MemoryLimit,
		notify: make(chan struct{}, 1), wakeAt: 1}
	s.flush = time.AfterFunc(time.Hour, s.timedFlush)
	s.flush.Stop()
	return s, nil
}

// Open opens a spool left on disk by another process. Its log is complete:
// nothing more is appended, and shipping resumes at the acknowledged offset.
func Open(dir string) (*Spool, error) {
	data, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	s := &Spool{dir: dir, closed: true, notify: make(chan struct{}, 1), wakeAt: math.MaxInt64}
	if err := json.Unmarshal(data, &s.meta); err != nil {
		return nil, fmt.Errorf("opening spool %s: meta.json: %w", dir, err)
	}
	info, err := os.Stat(filepath.Join(dir, logsFile))
	switch {
	case err == nil:
		s.total = info.Size()
		s.fileEnd = s.total
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, sentFile)); err == nil {
		// A damaged offset restarts from 0: duplicates rather than loss.
		n, perr := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if perr == nil && n >= 0 && n <= s.total {
			s.sent = n
		}
	}
	return s, nil
}

// Pending lists the spool directories under root, oldest first. Every
// spool on disk is undelivered: Remove deletes it once it is delivered.
func Pending(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("listing spools: %w", err)
	}
	type item struct {
		dir string
		t   time.Time
	}
	var items []item
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		// meta.json is written once, at creation: its time is the spool's age.
		info, err := os.Stat(filepath.Join(dir, metaFile))
		if err != nil {
			continue
		}
		items = append(items, item{dir, info.ModTime()})
	}
	slices.SortFunc(items, func(a, b item) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return strings.Compare(a.dir, b.dir)
	})
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.dir
	}
	return out, nil
}

// Dir is the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Meta is the step the spool belongs to.
func (s *Spool) Meta() Meta { return s.meta }

// Append adds one line of stream ("stdout" or "stderr") read at ts. A
// line longer than MaxLineBytes becomes several records, so that a record
// is always small enough for one request. Invalid UTF-8 is replaced.
func (s *Spool) Append(stream string, ts time.Time, line []byte) error {
	if len(stream) > maxStreamBytes {
		return fmt.Errorf("appending to spool: stream name of %d bytes", len(stream))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.err != nil && len(s.mem)+len(line)+maxRecordBytes > s.memLimit {
		s.lost++
		return nil
	}
	s.lines++
	s.text += int64(len(line))
	for {
		piece := line
		if len(piece) > MaxLineBytes {
			piece = line[:runeCut(line, MaxLineBytes)]
		}
		s.appendRecord(stream, ts, piece)
		line = line[len(piece):]
		if len(line) == 0 {
			return nil
		}
	}
}

func (s *Spool) appendRecord(stream string, ts time.Time, line []byte) {
	t := ts.UTC()
	// Formatting a time is the costliest part of a record; the part up to
	// the second changes once a second, so only the fraction is per line.
	if sec := t.Unix(); sec != s.tsSec || s.tsPrefix == nil {
		s.tsPrefix = t.AppendFormat(append(s.tsPrefix[:0], `{"ts":"`...), tsLayout[:20])
		s.tsSec = sec
	}
	b := append(s.enc[:0], s.tsPrefix...)
	b = appendNanos(b, t.Nanosecond())
	switch stream {
	case "stdout", "stderr":
		b = append(b, `Z","stream":"`...)
		b = append(b, stream...)
		b = append(b, `","line":`...)
	default:
		b = append(b, `Z","stream":`...)
		b = appendJSONString(b, []byte(stream))
		b = append(b, `,"line":`...)
	}
	b = appendJSONString(b, line)
	b = append(b, "}\n"...)
	s.enc = b
	s.total += int64(len(b))
	if s.err != nil {
		s.mem = append(s.mem, b...)
	} else {
		s.buf = append(s.buf, b...)
		if len(s.buf) >= writeBufferSize {
			s.flushLocked()
		} else if !s.armed {
			s.armed = true
			s.flush.Reset(flushEvery)
		}
	}
	if s.total >= s.wakeAt {
		s.wakeAt = math.MaxInt64
		s.wake()
	}
}

// appendNanos appends ns as exactly nine digits.
func appendNanos(b []byte, ns int) []byte {
	var d [9]byte
	for i := 8; i >= 0; i-- {
		d[i] = byte('0' + ns%10)
		ns /= 10
	}
	return append(b, d[:]...)
}

func (s *Spool) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// timedFlush runs flushEvery after the first buffered line.
func (s *Spool) timedFlush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = false
	s.flushLocked()
}

// Flush writes buffered records to the file, for a reader of the file.
// It returns the first write error, if any (the records are then kept in
// memory, see Err).
func (s *Spool) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

// flushLocked writes buf to the file. When that fails (a full disk), the
// file is cut back to its last whole record and what was not written
// goes to memory, as does everything appended after: the shipper still
// sends it, only a crash would now lose it.
func (s *Spool) flushLocked() error {
	if s.f == nil || s.err != nil || len(s.buf) == 0 {
		return s.err
	}
	n, err := s.f.Write(s.buf)
	if err == nil {
		s.fileEnd += int64(n)
		s.buf = s.buf[:0]
		return nil
	}
	s.err = fmt.Errorf("writing log spool: %w", err)
	if n > 0 {
		if terr := s.f.Truncate(s.fileEnd); terr != nil {
			// The torn tail stays in the file; only fileEnd is read.
			s.err = fmt.Errorf("%w (and cutting back the torn record: %v)", s.err, terr)
		}
	}
	s.memBase = s.fileEnd
	s.mem = append(s.mem[:0], s.buf...)
	s.buf = nil
	return s.err
}

// Close ends the log: everything is flushed and synced, and the shipper
// finishes what is left. It returns the first write error, if any.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.err
	}
	s.flushLocked()
	if s.err != nil && s.f != nil {
		// The step's log itself says what happened (the only record that may
		// go past the memory limit).
		msg := fmt.Sprintf("stroem-worker: this step's log could not be written to the worker's disk (%v); the lines after that point were sent from memory only", s.err)
		if s.lost > 0 {
			msg += fmt.Sprintf(", and %d lines that did not fit in memory were lost", s.lost)
		}
		s.appendRecord("stderr", time.Now(), []byte(msg))
	}
	s.closed = true
	if s.flush != nil {
		s.flush.Stop()
	}
	if s.f != nil {
		// Synced once per step: the spool exists to survive a crash, and a
		// completion saved after this must not outlive the lines before it.
		if err := s.f.Sync(); err != nil && s.err == nil {
			s.err = fmt.Errorf("syncing spool: %w", err)
		}
		if err := s.f.Close(); err != nil && s.err == nil {
			s.err = fmt.Errorf("closing spool: %w", err)
		}
		s.f = nil
	}
	s.wake()
	return s.err
}

// Lines is how many lines were appended (a cut line counts once).
func (s *Spool) Lines() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines
}

// Bytes is how many bytes of line text were appended (before encoding).
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.text
}

// Lost is how many lines could be neither written to disk nor kept in
// memory (after a write error, beyond the memory limit).
func (s *Spool) Lost() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// Err is the first error writing the spool's file, if any.
func (s *Spool) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// readAt reads the log at logical offset off: from the file (through f,
// the reader's own descriptor) below fileEnd, from memory above it.
func (s *Spool) readAt(f *os.File, p []byte, off int64) (int, error) {
	s.mu.Lock()
	fileEnd := s.fileEnd
	if off >= fileEnd {
		n := 0
		if i := off - s.memBase; i >= 0 && i < int64(len(s.mem)) {
			n = copy(p, s.mem[i:])
		}
		s.mu.Unlock()
		return n, nil
	}
	s.mu.Unlock()
	if f == nil {
		return 0, nil
	}
	want := p[:min(int64(len(p)), fileEnd-off)]
	n, err := f.ReadAt(want, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// Lag is how many record bytes the server has not acknowledged yet.
func (s *Spool) Lag() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total - s.sent
}

// state returns the appended size, acknowledged offset and closed flag.
func (s *Spool) state() (total, sent int64, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, s.sent, s.closed
}

// wakeWhen asks Append to wake the shipper once total reaches at, and
// wakes it now if that is already so (or the log is closed), so that no
// notification can fall between the shipper's look and its wait.
func (s *Spool) wakeWhen(at int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakeAt = at
	if s.closed || s.total >= at {
		s.wake()
	}
}

// ack records that the server has everything before off. The offset is
// kept in memory even if the file cannot be written: the cost of a lost
// offset is duplicates after a crash, never loss.
func (s *Spool) ack(off int64) error {
	s.mu.Lock()
	s.sent = max(s.sent, off)
	if drop := s.sent - s.memBase; s.err != nil && drop > 0 {
		// Delivered: what memory held of it is no longer needed.
		drop = min(drop, int64(len(s.mem)))
		s.mem = s.mem[:copy(s.mem, s.mem[drop:])]
		s.memBase += drop
	}
	s.mu.Unlock()
	// Not synced: it is written per batch, and an offset lost or torn by a
	// power cut only restarts delivery from 0 (duplicates, never loss).
	return atomicfile.Write(filepath.Join(s.dir, sentFile), strconv.AppendInt(nil, off, 10), atomicfile.Volatile)
}

// SaveCompletion stores the step's completion body, so that a process
// dying before it is delivered leaves it for the next one. The file is
// synced before it takes its name: after a power cut the name holds the
// whole body or nothing (then the step is reported as having died), never
// a torn body. (The directory is not synced: that would cost every step
// another fsync to save a result only a power cut could lose.)
func (s *Spool) SaveCompletion(body []byte) error {
	if err := atomicfile.Write(filepath.Join(s.dir, completionFile), body, atomicfile.Whole); err != nil {
		return fmt.Errorf("saving completion: %w", err)
	}
	return nil
}

// Completion returns the saved completion body, if there is one that is
// a JSON object; anything else (a file damaged outside the worker) counts
// as no completion, so the step is reported failed rather than sent
// garbage the server would refuse for good.
func (s *Spool) Completion() ([]byte, bool) {
	data, err := os.ReadFile(filepath.Join(s.dir, completionFile))
	if err != nil || !json.Valid(data) || len(bytes.TrimSpace(data)) == 0 || bytes.TrimSpace(data)[0] != '{' {
		return nil, false
	}
	return data, true
}

// Remove deletes the spool once everything is delivered.
func (s *Spool) Remove() error {
	s.Close()
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("removing spool: %w", err)
	}
	return nil
}

// jsonSafe marks the ASCII bytes that go into a JSON string as they are.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as a JSON string. Only quotes, backslashes
// and control characters need escaping; invalid UTF-8 (which ReadLines
// never gives, but a caller might) becomes \ufffd, because one invalid
// byte would make the server refuse the whole batch.
func appendJSONString(b, s []byte) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonSafe[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
