package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/atomicfile"
	"github.com/stroem-worker/stroem-worker/shared/filelock"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
)

// Files a spool may hold besides logstream's own.
const (
	// completionSentFile marks a spool whose completion was delivered but
	// whose logs were not: the step must not be reported a second time.
	completionSentFile = "complete.sent"
	// supersededFile marks an attempt whose step this host claimed again:
	// its completion must never be sent.
	supersededFile = "superseded"
	// handleFile is the runner's handle of the step's code (a process
	// group, a container, a pod): what to stop if the owner died.
	handleFile = "handle.json"
	// staleDir keeps spools whose result was too old to send.
	staleDir = "stale"
	// lockDir holds the step locks.
	lockDir = ".locks"
)

// Withheld reasons, for logs and metrics.
const (
	ReasonSuperseded = "superseded"
	ReasonStale      = "stale"
)

// ErrBusy: a live process owns the spool.
var ErrBusy = filelock.ErrBusy

// DiedMessage is the error reported for a step whose worker process died
// before it reported the step's result.
func DiedMessage(step, cause string) string {
	return fmt.Sprintf("worker process for step %s died: %s", step, cause)
}

// Deliverer sends spools to the server.
type Deliverer struct {
	Root   string
	Client *api.Client
	Log    *slog.Logger
	// MaxAge withholds results older than this (0: no limit).
	MaxAge time.Duration
	// Kill stops what a dead step left running, given the handle its
	// runner recorded. Nil: nothing is stopped.
	Kill func(ctx context.Context, handle json.RawMessage) error
	// Withheld is told of every completion not sent, with its reason.
	Withheld func(reason string)
	// Guard, when set, is held around every completion sent, so a process
	// that claims and supersedes under the same Guard never races a send.
	Guard sync.Locker
	// Retry shapes the resending of a completion that failed without taking
	// effect (the zero value: 500 ms doubling to 15 s, until ctx ends).
	Retry api.Retry
	// Unanswered is told the worker id of a step whose result may or may
	// not have arrived (ErrUnanswered): that id must go silent.
	Unanswered func(workerID string)
	// UnansweredWindow overrides DefaultUnansweredWindow (tests).
	UnansweredWindow time.Duration
}

// ErrUnanswered: a completion was sent and may have taken effect, but no
// answer said so within UnansweredWindow of sending it.
var ErrUnanswered = errors.New("no answer to the step result within the resend window")

// DefaultUnansweredWindow bounds how long after sending a completion
// whose answer was lost it may be sent again: well under the server's
// default retry delay (30 s), so a resend cannot land on the step's next
// attempt.
const DefaultUnansweredWindow = 20 * time.Second

func (d *Deliverer) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// Lock makes the directory of the spool named key (if it is not there)
// and takes its lock, or returns ErrBusy. The lock is an flock on the
// directory itself: a lock file beside it would cost a file created and
// removed per step. It is taken before the spool has any content, so a
// process scanning for pending spools never takes one being made for one
// left behind.
func (d *Deliverer) Lock(key string) (*filelock.Lock, error) {
	if err := os.MkdirAll(d.Root, 0o700); err != nil {
		return nil, fmt.Errorf("creating spool directory: %w", err)
	}
	return filelock.TryLockDir(filepath.Join(d.Root, key), true, filelock.Options{})
}

// Own takes the lock of the spool named key, for a runner's sweep of
// leftovers (runner.Sweeper): ErrBusy while a live process owns the step.
// A spool that is gone belongs to no one (its step was delivered): the
// leftover is the sweeper's.
func (d *Deliverer) Own(key string) (unlock func(), err error) {
	l, err := filelock.TryLockDir(filepath.Join(d.Root, key), false, filelock.Options{})
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, nil
	}
	if err != nil {
		return nil, err
	}
	return func() { l.Unlock() }, nil
}

// Pending delivers every spool that no live process owns, oldest first,
// and returns how many it delivered. Token rejection stops it (the
// error); other failures leave the spool for the next try and only log.
func (d *Deliverer) Pending(ctx context.Context, cause string) (int, error) {
	dirs, err := logstream.Pending(d.Root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("listing pending spools: %w", err)
	}
	d.pruneStale()
	d.pruneEmpty()
	delivered := 0
	for _, dir := range dirs {
		if b := filepath.Base(dir); b == staleDir || b == lockDir {
			continue
		}
		err := d.One(ctx, filepath.Base(dir), cause)
		switch {
		case err == nil:
			delivered++
		case errors.Is(err, ErrBusy):
		case errors.Is(err, api.ErrUnauthorized):
			return delivered, err
		case ctx.Err() != nil:
			return delivered, nil
		default:
			d.log().Warn("could not deliver a pending spool; will try again", "dir", dir, "error", err.Error())
		}
	}
	return delivered, nil
}

// One delivers the spool named key if no live process owns it (ErrBusy
// otherwise). A spool that is gone was delivered by its owner.
func (d *Deliverer) One(ctx context.Context, key, cause string) error {
	dir := filepath.Join(d.Root, key)
	lock, err := filelock.TryLockDir(dir, false, filelock.Options{})
	if errors.Is(err, os.ErrNotExist) {
		return nil // its owner delivered and removed it
	}
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if _, err := os.Stat(filepath.Join(dir, "meta.json")); errors.Is(err, os.ErrNotExist) {
		// Its owner died before it wrote anything: nothing to deliver.
		return os.RemoveAll(dir)
	}
	sp, err := logstream.Open(dir)
	if err != nil {
		return fmt.Errorf("opening spool: %w", err)
	}
	meta := sp.Meta()
	_, saved := sp.Completion()
	if h, err := os.ReadFile(filepath.Join(dir, handleFile)); err == nil && !saved && d.Kill != nil {
		// The step may still be running without its worker: stop it
		// before it is reported, or a retry could run beside it.
		if err := d.Kill(ctx, h); err != nil {
			d.log().Warn("stopping what a dead step left running", "job_id", meta.JobID, "step", meta.StepName, "error", err.Error())
		}
	}
	if _, err := logstream.Ship(ctx, sp, logstream.ShipOptions{
		StepName: meta.StepName,
		Send: func(ctx context.Context, body []byte) error {
			return d.Client.PostLogs(ctx, meta.JobID, body)
		},
		Permanent: api.IsPermanent,
		Fatal:     api.IsFatal,
		Logger:    d.log(),
	}); err != nil {
		return fmt.Errorf("delivering logs of %s/%s: %w", meta.JobID, meta.StepName, err)
	}
	if !exists(filepath.Join(dir, completionSentFile)) {
		body, ok := sp.Completion()
		if !ok {
			msg := DiedMessage(meta.StepName, cause)
			body, _ = json.Marshal(api.CompleteRequest{ExitCode: -1, Error: &msg})
		}
		if err := d.Complete(ctx, sp, body); err != nil {
			return err
		}
	}
	return d.remove(sp)
}

// Complete sends a completion for the spool's attempt unless it must be
// withheld (superseded or too old: nil, and the reason is logged and
// counted). A completion the server refuses for good (a 4xx other than
// 401, 408, 429) is dropped with the spool: keeping it would retry it
// on every run forever.
func (d *Deliverer) Complete(ctx context.Context, sp *logstream.Spool, body []byte) error {
	meta := sp.Meta()
	if d.Guard != nil {
		d.Guard.Lock()
		defer d.Guard.Unlock()
	}
	// Held across the check and the send: a claimer of the same step on
	// this host marks the attempt superseded under it (Supersede).
	sl, err := d.stepLock(ctx, meta.JobID, meta.StepName)
	if err != nil {
		return fmt.Errorf("delivering result of %s/%s: %w", meta.JobID, meta.StepName, err)
	}
	defer sl.Unlock()
	switch {
	case exists(filepath.Join(sp.Dir(), supersededFile)):
		d.withhold(meta, ReasonSuperseded, "this host claimed the step again; the earlier attempt's result is not sent")
		return nil
	case d.MaxAge > 0 && !meta.Created.IsZero() && time.Since(meta.Created) > d.MaxAge:
		d.withhold(meta, ReasonStale, fmt.Sprintf("the result is older than %s; it is not sent and its spool is kept under %s", d.MaxAge, filepath.Join(d.Root, staleDir)))
		return d.keepStale(sp)
	}
	err = d.send(ctx, meta, body)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnanswered):
		// Sent again, it could land on a later attempt of the step (the
		// server re-queues a failed step with retry: after its delay, 30 s
		// by default). It counts as sent; the worker id the step ran under
		// goes silent, so the server's heartbeat timeout fails the step
		// should the result never have arrived.
		d.log().Warn("step result got no answer and may have been applied; it is not sent again", "job_id", meta.JobID, "step", meta.StepName, "error", err.Error())
		if merr := MarkCompletionSent(sp.Dir()); merr != nil {
			d.log().Error("marking the completion sent", "error", merr.Error())
		}
		if d.Unanswered != nil {
			d.Unanswered(meta.WorkerID)
		}
		return nil
	case api.IsPermanent(err):
		d.remove(sp)
		return fmt.Errorf("result of %s/%s refused for good, spool removed: %w", meta.JobID, meta.StepName, err)
	default:
		return fmt.Errorf("delivering result of %s/%s: %w", meta.JobID, meta.StepName, err)
	}
}

// send sends a completion, resending it while that is safe: always after
// failures that took no effect (the connection was refused, a 503), and
// after an unanswered send only within UnansweredWindow of it.
func (d *Deliverer) send(ctx context.Context, meta logstream.Meta, body []byte) error {
	retry := d.Retry
	if retry == (api.Retry{}) {
		retry = api.Retry{Initial: 500 * time.Millisecond, Max: 15 * time.Second}
	}
	client := d.Client.WithRetry(api.Retry{Attempts: 1})
	var unanswered time.Time // when the first unanswered send went out
	for attempt := 1; ; attempt++ {
		sent := time.Now()
		err := client.CompleteRaw(ctx, meta.JobID, meta.StepName, body)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil, api.IsPermanent(err), api.IsFatal(err):
			return err
		case api.IsAmbiguous(err):
			if unanswered.IsZero() {
				unanswered = sent
			}
		case !api.IsTransient(err):
			return err
		}
		if retry.Attempts > 0 && attempt >= retry.Attempts {
			return err
		}
		wait := retry.Delay(attempt)
		window := d.UnansweredWindow
		if window <= 0 {
			window = DefaultUnansweredWindow
		}
		if !unanswered.IsZero() && time.Since(unanswered)+wait >= window {
			return fmt.Errorf("%w: %w", ErrUnanswered, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (d *Deliverer) withhold(meta logstream.Meta, reason, msg string) {
	d.log().Warn("step result withheld: "+msg, "job_id", meta.JobID, "step", meta.StepName, "reason", reason)
	if d.Withheld != nil {
		d.Withheld(reason)
	}
}

// Supersede marks every other attempt of the step that has a spool here:
// none of their completions will be sent from now on. It returns how many
// of them still had a result to send (for the new attempt's log).
func (d *Deliverer) Supersede(ctx context.Context, jobID, step, attempt string) (int, error) {
	if err := os.MkdirAll(d.Root, 0o700); err != nil {
		return 0, fmt.Errorf("creating spool directory: %w", err)
	}
	stepKey, own := StepKey(jobID, step), Key(jobID, step, attempt)
	earlier := func() ([]os.DirEntry, error) {
		entries, err := os.ReadDir(d.Root)
		return slices.DeleteFunc(entries, func(e os.DirEntry) bool {
			return !e.IsDir() || e.Name() == own || !isAttemptOf(e.Name(), stepKey)
		}), err
	}
	// Nearly always there is no earlier attempt here, and no lock is taken.
	if entries, err := earlier(); err != nil || len(entries) == 0 {
		if err != nil {
			return 0, fmt.Errorf("superseding earlier attempts: %w", err)
		}
		return 0, nil
	}
	sl, err := d.stepLock(ctx, jobID, step)
	if err != nil {
		return 0, fmt.Errorf("superseding earlier attempts: %w", err)
	}
	defer sl.Unlock()
	entries, err := earlier()
	if err != nil {
		return 0, fmt.Errorf("superseding earlier attempts: %w", err)
	}
	n := 0
	for _, e := range entries {
		dir := filepath.Join(d.Root, e.Name())
		if exists(filepath.Join(dir, completionSentFile)) || exists(filepath.Join(dir, supersededFile)) {
			continue
		}
		if err := atomicfile.Write(filepath.Join(dir, supersededFile), nil, atomicfile.Durable); err != nil {
			return n, fmt.Errorf("superseding attempt %s: %w", e.Name(), err)
		}
		n++
	}
	return n, nil
}

// stepLockBuckets is how many lock files the steps of a worker home share.
// Different steps in one bucket only wait on each other briefly.
const stepLockBuckets = 64

// stepLock takes the lock that orders a completion's check-and-send of a
// step against the superseding of its attempts. The lock files live in
// spool/.locks and are never removed: one per step would cost creating
// and deleting a file per step, the dearest thing a short step does.
func (d *Deliverer) stepLock(ctx context.Context, jobID, step string) (*filelock.Lock, error) {
	h := fnv.New32a()
	h.Write([]byte(StepKey(jobID, step)))
	dir := filepath.Join(d.Root, lockDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return filelock.Wait(ctx, filepath.Join(dir, strconv.Itoa(int(h.Sum32()%stepLockBuckets))+".lock"), filelock.Options{})
}

// MarkCompletionSent records that the spool's completion reached the
// server while its logs did not: only the logs are left to deliver.
func MarkCompletionSent(dir string) error {
	return atomicfile.Write(filepath.Join(dir, completionSentFile), nil, atomicfile.Durable)
}

// SaveHandle records the runner's handle of the step's code in its spool.
// Not synced: it serves a process that outlives the worker, and a power
// loss leaves no such process.
func SaveHandle(dir string, handle json.RawMessage) error {
	return atomicfile.Write(filepath.Join(dir, handleFile), handle, atomicfile.Volatile)
}

func (d *Deliverer) remove(sp *logstream.Spool) error {
	if err := sp.Remove(); err != nil {
		return err
	}
	return nil
}

// keepStale moves a spool out of the pending set into staleDir, where
// pruneStale removes it after another MaxAge.
func (d *Deliverer) keepStale(sp *logstream.Spool) error {
	sp.Close()
	dst := filepath.Join(d.Root, staleDir)
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("keeping stale spool: %w", err)
	}
	target := filepath.Join(dst, filepath.Base(sp.Dir()))
	if err := os.Rename(sp.Dir(), target); err != nil {
		return fmt.Errorf("keeping stale spool: %w", err)
	}
	now := time.Now()
	os.Chtimes(target, now, now)
	return nil
}

// pruneEmpty removes spool directories that never got content (a process
// that died between making the directory and its first file) and that no
// live process holds.
func (d *Deliverer) pruneEmpty() {
	entries, err := os.ReadDir(d.Root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || e.Name() == staleDir || e.Name() == lockDir {
			continue
		}
		dir := filepath.Join(d.Root, e.Name())
		if exists(filepath.Join(dir, "meta.json")) {
			continue
		}
		if l, err := filelock.TryLockDir(dir, false, filelock.Options{}); err == nil {
			if !exists(filepath.Join(dir, "meta.json")) {
				os.RemoveAll(dir)
			}
			l.Unlock()
		}
	}
}

// pruneStale removes stale spools kept for longer than MaxAge.
func (d *Deliverer) pruneStale() {
	entries, err := os.ReadDir(filepath.Join(d.Root, staleDir))
	if err != nil || d.MaxAge <= 0 {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < d.MaxAge || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		os.RemoveAll(filepath.Join(d.Root, staleDir, e.Name()))
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
