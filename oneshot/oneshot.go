package oneshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/handoff"
	"github.com/stroem-worker/stroem-worker/shared/process"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
)

// ErrNotDelivered: the step ran but its logs or result could not be
// delivered within delivery_timeout_secs. The spool is kept on disk and
// the next claim-and-run or supervise delivers it before claiming.
var ErrNotDelivered = errors.New("step result not delivered")

// Options are the per-run settings of claim-and-run that are not config.
type Options struct {
	// Wait keeps polling for work this long before giving up (0 = claim once).
	Wait time.Duration
	// WorkerID, when set, is used instead of a persisted or new id
	// (STROEM_WORKER_ID).
	WorkerID string
	// Handoff, when set, is a step a supervisor claimed: no claim, and its
	// worker id, attempt and supervisor come with it.
	Handoff *handoff.Handoff
	// Events, when set, receives progress reports for a supervisor.
	Events *handoff.Writer
	// HardDeadline, when set, is when the process will be killed (a pod's
	// active deadline, a Lambda invocation's end). The step is stopped
	// Reserve before it, and delivery after the step is cut to fit.
	HardDeadline time.Time
	// Reserve is the time kept back before HardDeadline to stop the step
	// and deliver its result. Zero: cancel_grace_secs plus 10% of the
	// time left (at least 5 s), but never more than half the time left.
	Reserve time.Duration
	// DeadlineMessage is the note on a step stopped by the deadline
	// (default "Worker deadline reached").
	DeadlineMessage string
}

// Deps are the things Run uses that tests and callers may replace.
type Deps struct {
	Logger     *slog.Logger
	HTTPClient *http.Client
	// Environ is the environment local steps inherit (before secrets are
	// removed); nil means os.Environ().
	Environ []string
	// Runners run the steps, by kind; nil runs local steps only.
	Runners runner.Set
	// Version is sent as the worker version at registration.
	Version string
}

// Outcome is how a claim-and-run ended.
type Outcome struct {
	// Claimed is false when no work was available.
	Claimed  bool
	WorkerID string
	JobID    string
	StepName string
	// ExitCode is what was reported for the step: the process exit code,
	// or -1 for a worker-side failure, cancellation, timeout or signal.
	ExitCode int
	// Signal is the name of the signal that ended the step's process, if
	// any, and SignalNumber its number.
	Signal       string
	SignalNumber int
	// Error is the error message reported for the step ("" on success).
	Error string
	// Delivered is true when the completion reached the server.
	Delivered bool
}

// Succeeded reports whether the step ran and was reported successful.
func (o Outcome) Succeeded() bool { return o.Claimed && o.ExitCode == 0 && o.Error == "" }

// Run is claim-and-run: at most one step, start to finish.
func Run(ctx context.Context, cfg *config.Config, opts Options, deps Deps) (Outcome, error) {
	w, err := newWorker(cfg, opts, deps)
	if err != nil {
		return Outcome{}, err
	}
	if deadline := stepDeadline(opts, cfg, time.Now()); !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	return w.run(ctx, opts)
}

// stepDeadline is when a run with a hard deadline stops its step: early
// enough for cancel_grace and delivery to fit before the hard end.
func stepDeadline(opts Options, cfg *config.Config, now time.Time) time.Time {
	if opts.HardDeadline.IsZero() {
		return time.Time{}
	}
	if opts.Reserve > 0 {
		return opts.HardDeadline.Add(-opts.Reserve)
	}
	left := opts.HardDeadline.Sub(now)
	reserve := cfg.CancelGrace() + max(5*time.Second, left/10)
	return opts.HardDeadline.Add(-min(reserve, left/2))
}

// worker holds what one claim-and-run needs; it lives for one Run.
type worker struct {
	cfg       *config.Config
	log       *slog.Logger
	client    *api.Client
	environ   []string
	version   string
	runners   runner.Set
	events    *handoff.Writer
	deliverer *delivery.Deliverer
	// deadlineMsg notes a step stopped by the run's deadline.
	deadlineMsg string
	// deliverBy bounds delivery after the step (zero: no bound).
	deliverBy time.Time
	// running is the sink of the step running now, if any.
	running atomic.Pointer[sink]
	// silenced is a worker id given up after an unanswered result: it gets
	// no more heartbeats.
	silenced atomic.Pointer[string]
}

func newWorker(cfg *config.Config, opts Options, deps Deps) (*worker, error) {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hc := deps.HTTPClient
	if hc == nil {
		hc = api.NewHTTPClient(cfg.ConnectTimeout())
	}
	env := deps.Environ
	if env == nil {
		env = os.Environ()
	}
	version := deps.Version
	if version == "" {
		version = "dev"
	}
	runners := deps.Runners
	if runners == nil {
		runners = runner.Set{runner.Local: &local.Runner{Log: log}}
	}
	if err := os.MkdirAll(cfg.WorkspaceDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating workspace_dir: %w", err)
	}
	client := api.New(api.Options{
		BaseURL:        cfg.ServerURL,
		Token:          cfg.WorkerToken,
		HTTPClient:     hc,
		RequestTimeout: cfg.RequestTimeout(),
		UserAgent:      "stroem-worker/" + version,
		Logger:         log,
	})
	msg := opts.DeadlineMessage
	if msg == "" {
		msg = "Worker deadline reached"
	}
	w := &worker{cfg: cfg, log: log, client: client, environ: env, version: version, runners: runners,
		events: opts.Events, deadlineMsg: msg, deliverBy: opts.HardDeadline}
	w.deliverer = &delivery.Deliverer{Root: delivery.Root(cfg.WorkspaceDir), Client: client, Log: log,
		MaxAge: cfg.ResultMaxAge(), Kill: runners.Kill, Unanswered: w.unanswered}
	return w, nil
}

func (w *worker) run(ctx context.Context, opts Options) (Outcome, error) {
	// Processes that escape a step's group (double fork, setsid) are
	// reparented here, so they can be killed when the step ends; their
	// zombies are collected while it runs.
	if err := process.EnableSubreaper(); err != nil {
		w.log.Warn("cannot become child subreaper; processes that escape a step may outlive it", "error", err.Error())
	}
	reapCtx, stopReap := context.WithCancel(context.WithoutCancel(ctx))
	reapDone := make(chan struct{})
	go func() { defer close(reapDone); process.Reap(reapCtx, 5*time.Second) }()
	defer func() { stopReap(); <-reapDone }()

	h := opts.Handoff
	if h == nil {
		// Results left behind by an earlier run go out before new work is
		// taken. Under a supervisor that is the supervisor's job.
		if err := w.deliverPending(ctx); err != nil {
			return Outcome{}, err
		}
		w.sweep(ctx)
		h = &handoff.Handoff{WorkerID: opts.WorkerID, Attempt: delivery.NewAttempt()}
	}
	id, fresh, err := w.identity(ctx, h.WorkerID)
	if err != nil {
		return Outcome{}, err
	}
	out := Outcome{WorkerID: id}
	log := w.log.With(slog.String("worker_id", id))

	// Heartbeats run from here until the step is reported: a step of a
	// worker silent for 120 s is failed by the server (contract §8).
	// The id may change (a new registration); heartbeats follow it.
	var current atomic.Pointer[string]
	first := id // its own variable: id changes below, current must not
	current.Store(&first)
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	if !fresh && h.SupervisorPID == 0 {
		// At once and before claiming: a scheduled run with no work is what
		// keeps a persisted worker row active (scale to zero), and a beat
		// left to the goroutine could be cut off by a run that ends at once.
		w.beat(ctx, id)
	}
	go func() {
		defer close(hbDone)
		w.heartbeat(hbCtx, &current, h.SupervisorPID)
	}()
	if h.SupervisorPID != 0 {
		defer w.watchSupervisor(hbCtx)()
	}
	defer func() { stopHB(); <-hbDone }()

	step := h.Step
	if step == nil {
		var newID string
		step, newID, err = w.claim(ctx, id, opts.Wait, &current, log)
		id = newID
		out.WorkerID = id
		if err != nil || step == nil {
			return out, err
		}
	}
	out.Claimed = true
	out.JobID, out.StepName = step.JobID, step.StepName
	res, err := w.runStep(ctx, id, h.Attempt, step, log.With(slog.String("job_id", step.JobID), slog.String("step", step.StepName)))
	out.ExitCode, out.Signal, out.SignalNumber, out.Error, out.Delivered = res.ExitCode, res.Signal, res.SignalNumber, res.Error, res.Delivered
	w.events.Emit(handoff.Event{Kind: handoff.Done, Delivered: res.Delivered, ExitCode: res.ExitCode, Failed: !out.Succeeded(),
		Lines: res.Lines, Bytes: res.Bytes, Dropped: res.Dropped, Lost: res.Lost})
	return out, err
}

// watchSupervisor keeps the running step's handle in its spool once the
// supervisor, which held it, is gone (the kernel signals this process:
// PR_SET_PDEATHSIG), for whoever delivers the spool should this process
// die too. It returns the function that stops watching.
func (w *worker) watchSupervisor(ctx context.Context) (stop func()) {
	gone := make(chan os.Signal, 1)
	signal.Notify(gone, handoff.SupervisorGoneSignal)
	go func() {
		for {
			select {
			case <-gone:
				if k := w.running.Load(); k != nil {
					k.saveHandle()
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { signal.Stop(gone) }
}

// unanswered gives up worker id id after a step result sent under it got
// no answer: a supervised child asks its supervisor to, a standalone run
// forgets its persisted id (the next run registers a fresh one) and stops
// heartbeating it, so the server's heartbeat timeout fails the step should
// its result never have arrived.
func (w *worker) unanswered(id string) {
	if w.events != nil {
		w.events.Emit(handoff.Event{Kind: handoff.Unanswered, WorkerID: id})
		return
	}
	w.forgetID(id)
	w.silenced.Store(&id)
}

// deliverPending delivers every spool left by an earlier process that is
// no longer running. Bounded: a server that is down, or a rotated token,
// must not keep a cron run from exiting.
func (w *worker) deliverPending(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.DeliveryTimeout())
	defer cancel()
	n, err := w.deliverer.Pending(ctx, "the process was gone when the spool was found")
	if n > 0 {
		w.log.Info("delivered results left by earlier runs", "steps", n)
	}
	return err
}

// sweep removes what dead workers of this home left running (pods,
// containers) whose steps nobody owns any more; a failure is logged only.
func (w *worker) sweep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RequestTimeout()*2)
	defer cancel()
	n, err := w.runners.Sweep(ctx, w.deliverer.Own)
	if err != nil && ctx.Err() == nil {
		w.log.Warn("sweeping what dead workers left running", "error", err.Error())
	}
	if n > 0 {
		w.log.Info("removed what dead workers left running", "count", n)
	}
}

// beat sends one heartbeat; a failure is logged only: the step goes on,
// and the next beat may get through.
func (w *worker) beat(ctx context.Context, id string) {
	if s := w.silenced.Load(); id == "" || (s != nil && *s == id) {
		return // abandoned
	}
	if err := w.client.Heartbeat(ctx, id); err != nil && ctx.Err() == nil {
		w.log.Warn("heartbeat failed", slog.String("worker_id", id), slog.String("error", err.Error()))
	}
}

// heartbeat beats every heartbeat interval until ctx ends. A supervised
// child leaves heartbeats to its supervisor while the supervisor lives:
// once it is gone (its parent changed), the child heartbeats for itself
// until its step is reported.
func (w *worker) heartbeat(ctx context.Context, current *atomic.Pointer[string], supervisor int) {
	beat := func() {
		if supervisor != 0 && os.Getppid() == supervisor {
			return
		}
		w.beat(ctx, *current.Load())
	}
	tick := time.NewTicker(w.cfg.HeartbeatInterval())
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			beat()
		case <-ctx.Done():
			return
		}
	}
}
