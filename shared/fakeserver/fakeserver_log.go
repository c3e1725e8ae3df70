package fakeserver

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
)

// LogBatch is one accepted POST /worker/jobs/{id}/logs, as LogBatches
// returns it. The server stores every batch it accepts, a batch sent
// again after its answer was lost included (as the real server does), so
// a retry shows in Logs as repeated records; Duplicate tells which.
type LogBatch struct {
	// Step is the batch's step_name ("" when absent).
	Step string
	// First is the index in Logs(jobID) of the batch's first record, and
	// Lines how many records it brought.
	First, Lines int
	// Duplicate counts the earlier batches of the job with exactly the
	// same step and records: 0 for a first delivery, 1 for its first
	// repetition, and so on.
	Duplicate int
}

type logBatch struct {
	LogBatch
	sum uint64
}

// LogBatches returns the log batches stored for jobID, in arrival order.
// It is empty when Options.OnLog is set (nothing is kept then).
func (s *Server) LogBatches(jobID string) []LogBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []LogBatch
	for _, b := range s.batches[canonicalID(jobID)] {
		out = append(out, b.LogBatch)
	}
	return out
}

// storeBatchLocked stores a log batch and records it as a LogBatch.
func (s *Server) storeBatchLocked(jobID, step string, recs []LogRecord) {
	if s.onLog != nil {
		s.appendLogLocked(jobID, recs...)
		return
	}
	var h maphash.Hash
	h.SetSeed(s.seed)
	str := func(v string) {
		binary.Write(&h, binary.LittleEndian, uint64(len(v)))
		h.WriteString(v)
	}
	str(step)
	for _, r := range recs {
		str(r.TS)
		str(r.Stream)
		str(r.Line)
	}
	b := logBatch{LogBatch: LogBatch{Step: step, First: len(s.logs[jobID]), Lines: len(recs)}, sum: h.Sum64()}
	logs := s.logs[jobID]
	for _, old := range s.batches[jobID] {
		if old.sum == b.sum && old.Step == step &&
			slices.Equal(logs[old.First:old.First+old.Lines], recs) {
			b.Duplicate++
		}
	}
	s.appendLogLocked(jobID, recs...)
	s.batches[jobID] = append(s.batches[jobID], b)
}
