package logstream

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Spool files.
const (
	metaFile       = "meta.json"
	logsFile       = "logs.jsonl"
	sentFile       = "logs.sent"
	completionFile = "complete.json"
)

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

	mu     sync.Mutex
	f      *os.File // logs.jsonl, append side
	w      *bufio.Writer
	total  int64 // bytes appended (written or buffered)
	sent   int64 // bytes the server acknowledged
	closed bool
	lines  int64
	enc    []byte // record encoding scratch, under mu
	err    error  // first write error, reported by Close

	// notify wakes the shipper: a full batch is waiting, or the log closed.
	notify chan struct{}
	// batchHint is the backlog at which Append wakes the shipper early.
	batchHint int64
}

// Create makes a new spool for a step at root/key (0700, files 0600).
// key must be a single safe path element.
func Create(root, key string, meta Meta) (*Spool, error) {
	if key == "" || strings.ContainsAny(key, `/\`) || key == "." || key == ".." {
		return nil, fmt.Errorf("creating spool: bad key %q", key)
	}
	dir := filepath.Join(root, key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	if meta.Created.IsZero() {
		meta.Created = time.Now().UTC()
	}
	data, _ := json.Marshal(meta)
	if err := writeAtomic(filepath.Join(dir, metaFile), data); err != nil {
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, logsFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating spool: %w", err)
	}
	// A spool of this key left by an earlier attempt is replaced whole.
	os.Remove(filepath.Join(dir, sentFile))
	os.Remove(filepath.Join(dir, completionFile))
	return &Spool{dir: dir, meta: meta, f: f, w: bufio.NewWriterSize(f, 64<<10),
		notify: make(chan struct{}, 1), batchHint: DefaultMaxBatchBytes}, nil
}

// Open opens a spool left on disk by another process. Its log is complete:
// nothing more is appended.
func Open(dir string) (*Spool, error) {
	data, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	s := &Spool{dir: dir, closed: true, notify: make(chan struct{}, 1)}
	if err := json.Unmarshal(data, &s.meta); err != nil {
		return nil, fmt.Errorf("opening spool %s: meta.json: %w", dir, err)
	}
	info, err := os.Stat(filepath.Join(dir, logsFile))
	switch {
	case err == nil:
		s.total = info.Size()
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, sentFile)); err == nil {
		n, perr := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if perr == nil && n >= 0 && n <= s.total {
			s.sent = n
		}
	}
	return s, nil
}

// Pending lists the spool directories under root, oldest first.
func Pending(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
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
		info, err := os.Stat(filepath.Join(dir, metaFile))
		if err != nil {
			continue
		}
		items = append(items, item{dir, info.ModTime()})
	}
	slices.SortFunc(items, func(a, b item) int { return a.t.Compare(b.t) })
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

// tsLayout is RFC 3339 in UTC with a fixed nanosecond fraction.
const tsLayout = "2006-01-02T15:04:05.000000000Z"

// Append adds one line. line must be valid UTF-8 (ReadLines guarantees it).
func (s *Spool) Append(stream string, ts time.Time, line []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("appending to a closed spool")
	}
	b := s.enc[:0]
	b = append(b, `{"ts":"`...)
	b = ts.UTC().AppendFormat(b, tsLayout)
	b = append(b, `","stream":"`...)
	b = append(b, stream...)
	b = append(b, `","line":`...)
	b = appendJSONString(b, line)
	b = append(b, "}\n"...)
	s.enc = b
	if _, err := s.w.Write(b); err != nil {
		if s.err == nil {
			s.err = fmt.Errorf("writing spool: %w", err)
		}
		return s.err
	}
	s.total += int64(len(b))
	s.lines++
	if s.total-s.sent >= s.batchHint {
		s.wake()
	}
	return nil
}

func (s *Spool) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Flush writes buffered records to the file, for the shipper to read.
func (s *Spool) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

func (s *Spool) flushLocked() error {
	if s.w == nil {
		return nil
	}
	if err := s.w.Flush(); err != nil && s.err == nil {
		s.err = fmt.Errorf("writing spool: %w", err)
	}
	return s.err
}

// Close ends the log: everything is flushed and the shipper finishes what
// is left. It returns the first write error, if any.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.err
	}
	s.closed = true
	s.flushLocked()
	if s.f != nil {
		if err := s.f.Close(); err != nil && s.err == nil {
			s.err = fmt.Errorf("closing spool: %w", err)
		}
	}
	s.wake()
	return s.err
}

// Lines and Bytes count what was appended.
func (s *Spool) Lines() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines
}

// state returns the appended size, acknowledged offset and closed flag.
func (s *Spool) state() (total, sent int64, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, s.sent, s.closed
}

// ack records that the server has everything before off.
func (s *Spool) ack(off int64) error {
	s.mu.Lock()
	s.sent = off
	s.mu.Unlock()
	return writeAtomic(filepath.Join(s.dir, sentFile), []byte(strconv.FormatInt(off, 10)))
}

// SaveCompletion stores the step's completion body.
func (s *Spool) SaveCompletion(body []byte) error {
	return writeAtomic(filepath.Join(s.dir, completionFile), body)
}

// Completion returns the saved completion body, if any.
func (s *Spool) Completion() ([]byte, bool) {
	data, err := os.ReadFile(filepath.Join(s.dir, completionFile))
	return data, err == nil
}

// Remove deletes the spool once everything is delivered.
func (s *Spool) Remove() error {
	s.Close()
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("removing spool: %w", err)
	}
	return nil
}

// writeAtomic writes a 0600 file through a temporary name and a rename, so
// a reader (or a crash) never sees half of it.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// appendJSONString appends s as a JSON string. s is valid UTF-8; only
// quotes, backslashes and control characters need escaping.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
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
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
