package logstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// DefaultMaxBatchBytes is the batch size: well under the server's 2 MiB
// body limit even with one more record of the longest kind (a 64 KiB line
// of control characters escapes to about 384 KiB).
const DefaultMaxBatchBytes = 1 << 20

// maxRecordBytes bounds one encoded record: 64 KiB of text escaped six
// times over, plus the timestamp, keys and stream name.
const maxRecordBytes = 6*MaxLineBytes + 6*maxStreamBytes + 128

// Sender posts one request body ({"step_name":..., "lines":[...]}) and
// returns nil once the server has accepted it.
type Sender func(ctx context.Context, body []byte) error

// ShipOptions configures Ship.
type ShipOptions struct {
	StepName string
	Send     Sender
	// Interval is how often a partial batch goes out while lines keep
	// coming (default 1 s); a full batch goes out at once, and the first
	// line after a quiet Interval goes out at once too.
	Interval time.Duration
	// MaxBatchBytes caps a request body (default DefaultMaxBatchBytes); a
	// single record larger than that still goes, alone.
	MaxBatchBytes int
	// Permanent says the server will never accept this body as it is (a
	// 4xx other than 401/408/429). The batch is then split to isolate the
	// record it refuses, and only that record is dropped. Nil: every error
	// is retried.
	Permanent func(error) bool
	// Fatal says no retry can succeed until someone acts (the token was
	// rejected): Ship returns the error at once, the spool kept. Nil: none.
	Fatal func(error) bool
	// RetryInitial and RetryMax shape the jittered exponential backoff
	// between failed sends (defaults 250 ms and 10 s).
	RetryInitial, RetryMax time.Duration
	Logger                 *slog.Logger
}

// Stats describe what a Ship call delivered.
type Stats struct {
	Lines, Bytes int64 // records and record bytes delivered
	Batches      int64 // requests accepted
	Retries      int64 // failed sends retried
	Dropped      int64 // records refused permanently, or torn by a crash
	Lag          int64 // record bytes not acknowledged when Ship returned
}

// Ship sends the spool's records from the acknowledged offset, in order,
// until the log is closed and everything is delivered (nil), or ctx ends
// first (an error wrapping ctx.Err(); what is left stays in the spool for
// Deliver). Failed sends are retried without end: only ctx bounds them.
// Memory is a few batches, whatever the backlog: it waits on disk.
func Ship(ctx context.Context, s *Spool, o ShipOptions) (Stats, error) {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = 250 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Permanent == nil {
		o.Permanent = func(error) bool { return false }
	}
	if o.Fatal == nil {
		o.Fatal = func(error) bool { return false }
	}
	if o.Send == nil {
		return Stats{}, errors.New("shipping logs: no sender")
	}
	sh := &shipper{s: s, o: o, buf: make([]byte, o.MaxBatchBytes+maxRecordBytes)}
	name, _ := json.Marshal(o.StepName)
	sh.prefix = append(append([]byte(`{"step_name":`), name...), `,"lines":[`...)
	f, err := os.Open(filepath.Join(s.dir, logsFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return sh.stats, fmt.Errorf("reading spool: %w", err)
	}
	if f != nil {
		defer f.Close()
	}
	sh.f = f
	_, sh.off, _ = s.state()

	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastSend time.Time
	for {
		_, _, closed := s.state()
		// A write error is the writer's to report (Append and Close return
		// it); the shipper still delivers whatever reached the file.
		s.Flush()
		partial := closed || time.Since(lastSend) >= o.Interval
		sentAny, err := sh.drain(ctx, partial)
		if sentAny {
			lastSend = time.Now()
		}
		if err != nil {
			return sh.done(), err
		}
		if closed {
			// Every whole record is delivered; bytes left without '\n' are
			// the torn last record of a process that died mid-write.
			if sh.n > 0 {
				o.Logger.Warn("dropping a torn last log record", "bytes", sh.n)
				sh.stats.Dropped++
				sh.consume(sh.n)
				sh.ack(sh.off)
			}
			return sh.done(), nil
		}
		total, sent, _ := s.state()
		var tick <-chan time.Time
		if total == sent {
			s.wakeWhen(total + 1)
		} else {
			s.wakeWhen(sent + int64(o.MaxBatchBytes))
			timer.Reset(max(0, o.Interval-time.Since(lastSend)))
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return sh.done(), fmt.Errorf("shipping logs: %w (%d bytes not delivered)", context.Cause(ctx), total-sent)
		case <-tick:
		case <-s.notify:
		}
	}
}

type shipper struct {
	s *Spool
	o ShipOptions
	f *os.File
	// buf[:n] is the file from offset off (the acknowledged offset) on:
	// a window one batch and one record long, slid as batches go out, so
	// nothing is read twice.
	buf    []byte
	n      int
	off    int64
	recs   [][]byte
	prefix []byte
	body   []byte
	stats  Stats
	// ackFailed: persisting the offset failed once already.
	ackFailed bool
}

func (sh *shipper) done() Stats {
	total, sent, _ := sh.s.state()
	sh.stats.Lag = total - sent
	return sh.stats
}

// fill tops the window up from the file.
func (sh *shipper) fill() error {
	for sh.n < len(sh.buf) {
		m, err := sh.s.readAt(sh.f, sh.buf[sh.n:], sh.off+int64(sh.n))
		sh.n += m
		if err != nil {
			return fmt.Errorf("reading spool: %w", err)
		}
		if m == 0 {
			return nil
		}
	}
	return nil
}

// consume drops k bytes from the front of the window.
func (sh *shipper) consume(k int) {
	sh.n = copy(sh.buf, sh.buf[k:sh.n])
	sh.off += int64(k)
}

// drain sends every full batch in the file past the acknowledged offset,
// and the last partial one too when partial is set.
func (sh *shipper) drain(ctx context.Context, partial bool) (sentAny bool, err error) {
	for {
		if err := sh.fill(); err != nil {
			return sentAny, err
		}
		size, full := sh.batch()
		if size == 0 {
			if sh.n == len(sh.buf) {
				// No record is this long; only damage to the file does this.
				if err := sh.skipDamaged(); err != nil {
					return sentAny, err
				}
				continue
			}
			return sentAny, nil
		}
		if !full && !partial {
			return sentAny, nil
		}
		if err := sh.send(ctx, sh.recs, sh.off); err != nil {
			return sentAny, err
		}
		sentAny = true
		sh.consume(size)
	}
}

// batch collects into sh.recs the whole records at the front of the
// window that fit in one body of MaxBatchBytes (at least one), and returns
// their size with newlines and whether the batch is full.
func (sh *shipper) batch() (size int, full bool) {
	// body = prefix + records + (k-1) commas + "]}", and size counts a
	// newline per record, so this keeps the body within MaxBatchBytes.
	limit := sh.o.MaxBatchBytes - len(sh.prefix) - 1
	sh.recs = sh.recs[:0]
	data := sh.buf[:sh.n]
	for {
		i := bytes.IndexByte(data[size:], '\n')
		if i < 0 {
			return size, false
		}
		if len(sh.recs) > 0 && size+i+1 > limit {
			return size, true
		}
		sh.recs = append(sh.recs, data[size:size+i])
		size += i + 1
	}
}

// skipDamaged drops bytes up to the next newline: a record too long to be
// one the spool wrote, so it cannot be sent whole.
func (sh *shipper) skipDamaged() error {
	skipped := 0
	for {
		if i := bytes.IndexByte(sh.buf[:sh.n], '\n'); i >= 0 {
			sh.consume(i + 1)
			skipped += i + 1
			break
		}
		if sh.n == 0 {
			break
		}
		skipped += sh.n
		sh.consume(sh.n)
		if err := sh.fill(); err != nil {
			return err
		}
	}
	sh.stats.Dropped++
	sh.o.Logger.Error("dropping a damaged log record", "bytes", skipped)
	sh.ack(sh.off)
	return nil
}

// ack persists the acknowledged offset; failing to is logged, not fatal:
// the lines are delivered, and a lost offset only means duplicates later.
func (sh *shipper) ack(off int64) {
	if err := sh.s.ack(off); err != nil && !sh.ackFailed {
		// Once per Ship: on a full disk it would fail for every batch.
		sh.ackFailed = true
		sh.o.Logger.Warn("recording shipped log offset (a crash now would resend lines)", "error", err.Error())
	}
}

// send delivers recs, which start at file offset off, retrying transient
// failures until ctx ends. A body the server refuses for good is split
// until the refused record is alone; that record is dropped and counted.
// The offset is acknowledged after each accepted body, so that a stop
// half way through a split repeats as little as possible.
func (sh *shipper) send(ctx context.Context, recs [][]byte, off int64) error {
	size := 0
	b := append(sh.body[:0], sh.prefix...)
	for i, r := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
		size += len(r) + 1
	}
	b = append(b, "]}"...)
	sh.body = b
	delay := sh.o.RetryInitial
	for {
		err := sh.o.Send(ctx, b)
		if err == nil {
			sh.stats.Batches++
			sh.stats.Lines += int64(len(recs))
			sh.stats.Bytes += int64(size - len(recs))
			sh.ack(off + int64(size))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("shipping logs: %w (last send: %w)", context.Cause(ctx), err)
		}
		if sh.o.Fatal(err) {
			return fmt.Errorf("shipping logs: %w", err)
		}
		if sh.o.Permanent(err) {
			if len(recs) == 1 {
				sh.stats.Dropped++
				sh.o.Logger.Error("server refused a log line; dropping it", "error", err.Error(), "bytes", len(recs[0]))
				sh.ack(off + int64(size))
				return nil
			}
			half := len(recs) / 2
			if err := sh.send(ctx, recs[:half], off); err != nil {
				return err
			}
			first := 0
			for _, r := range recs[:half] {
				first += len(r) + 1
			}
			return sh.send(ctx, recs[half:], off+int64(first))
		}
		sh.stats.Retries++
		sh.o.Logger.Warn("sending logs failed; retrying", "in", delay, "error", err.Error())
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("shipping logs: %w (last send: %w)", context.Cause(ctx), err)
		case <-t.C:
		}
		delay = min(delay*2, sh.o.RetryMax)
	}
}
