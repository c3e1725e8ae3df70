package logstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// times over, plus the timestamp and keys.
const maxRecordBytes = 6*MaxLineBytes + 256

// Sender posts one request body ({"step_name":..., "lines":[...]}).
type Sender func(ctx context.Context, body []byte) error

// ShipOptions configures Ship.
type ShipOptions struct {
	StepName string
	Send     Sender
	// Interval is how often new lines go out (default 1 s); a full batch
	// goes out at once.
	Interval      time.Duration
	MaxBatchBytes int
	// Permanent says the server will never accept this body as it is (a
	// 4xx other than 401/408/429). The batch is then split to isolate the
	// record it refuses, and only that record is dropped.
	Permanent func(error) bool
	// RetryInitial and RetryMax shape the backoff between failed sends
	// (defaults 250 ms and 10 s).
	RetryInitial, RetryMax time.Duration
	Logger                 *slog.Logger
}

// Stats describe what a Ship call delivered.
type Stats struct {
	Lines, Bytes int64 // records and record bytes delivered
	Batches      int64
	Retries      int64
	Dropped      int64 // records the server refused permanently
}

// Ship sends the spool's records from the acknowledged offset, in order,
// until the log is closed and everything is delivered (nil), or ctx ends
// first (an error; what is left stays in the spool).
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
	sh := &shipper{s: s, o: o, buf: make([]byte, o.MaxBatchBytes+maxRecordBytes)}
	sh.prefix, _ = json.Marshal(o.StepName)
	sh.prefix = append(append([]byte(`{"step_name":`), sh.prefix...), `,"lines":[`...)
	f, err := os.Open(filepath.Join(s.dir, logsFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return sh.stats, fmt.Errorf("reading spool: %w", err)
	}
	if f != nil {
		defer f.Close()
	}
	sh.f = f
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for {
		// Ship what is there: whole batches, and the remainder.
		if err := s.Flush(); err != nil {
			return sh.stats, err
		}
		if err := sh.drain(ctx); err != nil {
			return sh.stats, err
		}
		total, sent, closed := s.state()
		if closed && sent >= total {
			return sh.stats, nil
		}
		if closed {
			// Whole records are all shipped; what is left has no '\n': the
			// torn last record of a process that died mid-write.
			sh.o.Logger.Warn("dropping a torn last log record", "bytes", total-sent)
			sh.stats.Dropped++
			if err := s.ack(total); err != nil {
				return sh.stats, fmt.Errorf("recording shipped offset: %w", err)
			}
			return sh.stats, nil
		}
		select {
		case <-ctx.Done():
			return sh.stats, fmt.Errorf("shipping logs: %w (%d bytes not delivered)", ctx.Err(), total-sent)
		case <-tick.C:
		case <-s.notify:
		}
	}
}

type shipper struct {
	s      *Spool
	o      ShipOptions
	f      *os.File
	buf    []byte
	prefix []byte
	body   bytes.Buffer
	stats  Stats
}

// drain sends every whole record in the file past the acknowledged offset.
func (sh *shipper) drain(ctx context.Context) error {
	if sh.f == nil {
		return nil
	}
	for {
		_, sent, _ := sh.s.state()
		n, err := sh.f.ReadAt(sh.buf, sent)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("reading spool: %w", err)
		}
		recs := wholeRecords(sh.buf[:n], sh.o.MaxBatchBytes)
		if len(recs) == 0 {
			return nil
		}
		size := 0
		for _, r := range recs {
			size += len(r) + 1
		}
		if err := sh.send(ctx, recs); err != nil {
			return err
		}
		if err := sh.s.ack(sent + int64(size)); err != nil {
			return fmt.Errorf("recording shipped offset: %w", err)
		}
	}
}

// wholeRecords splits data into complete records (without '\n'), up to
// max bytes but always at least one.
func wholeRecords(data []byte, max int) [][]byte {
	var recs [][]byte
	size := 0
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 || (len(recs) > 0 && size+i+1 > max) {
			break
		}
		recs = append(recs, data[:i])
		size += i + 1
		data = data[i+1:]
	}
	return recs
}

// send delivers recs, retrying transient failures until ctx ends. A body
// the server refuses for good is split until the refused record is alone;
// that record is dropped and counted.
func (sh *shipper) send(ctx context.Context, recs [][]byte) error {
	sh.body.Reset()
	sh.body.Write(sh.prefix)
	for i, r := range recs {
		if i > 0 {
			sh.body.WriteByte(',')
		}
		sh.body.Write(r)
	}
	sh.body.WriteString("]}")
	delay := sh.o.RetryInitial
	for {
		err := sh.o.Send(ctx, sh.body.Bytes())
		if err == nil {
			sh.stats.Batches++
			sh.stats.Lines += int64(len(recs))
			for _, r := range recs {
				sh.stats.Bytes += int64(len(r))
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("shipping logs: %w", err)
		}
		if sh.o.Permanent(err) {
			if len(recs) == 1 {
				sh.stats.Dropped++
				sh.o.Logger.Error("server refused a log line; dropping it", "error", err.Error(), "bytes", len(recs[0]))
				return nil
			}
			half := len(recs) / 2
			if err := sh.send(ctx, recs[:half]); err != nil {
				return err
			}
			return sh.send(ctx, recs[half:])
		}
		sh.stats.Retries++
		sh.o.Logger.Warn("sending logs failed; retrying", "in", delay, "error", err.Error())
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("shipping logs: %w", err)
		case <-t.C:
		}
		delay = min(delay*2, sh.o.RetryMax)
	}
}
