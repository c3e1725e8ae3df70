package oneshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/process"
	"github.com/stroem-worker/stroem-worker/shared/redact"
	"github.com/stroem-worker/stroem-worker/shared/workspace"
)

// Sentinels the command line maps to exit codes (errors.Is).
var (
	// ErrNotDelivered: the step ran but its logs or result could not be
	// delivered within delivery_timeout_secs. The spool is kept on disk and
	// the next claim-and-run or supervise delivers it before claiming.
	ErrNotDelivered = errors.New("step result not delivered")
)

// Options are the per-run settings of claim-and-run that are not config.
type Options struct {
	// Wait keeps polling for work this long before giving up (0 = claim once).
	Wait time.Duration
	// WorkerID, when set, is used instead of a persisted or new id
	// (STROEM_WORKER_ID; the supervisor passes its own).
	WorkerID string
	// Step, when set, is a step already claimed by a supervisor: no claim.
	Step *api.Step
	// Deadline, when set, is a hard end for the whole run: the step is
	// cancelled in time to report it (Kubernetes activeDeadlineSeconds,
	// Lambda invocation deadline).
	Deadline time.Time
	// SupervisorPID is the supervising process, when there is one: while
	// it lives it heartbeats for the worker id, and the child does not.
	SupervisorPID int
	// Events, when set, receives progress reports for a supervisor.
	Events *EventWriter
	// DeliverBy, when set, is when the process will be killed (a pod's
	// active deadline, a Lambda invocation's end): delivery after the step
	// ends is cut to fit before it. Set Deadline earlier, leaving room for
	// cancel_grace and delivery.
	DeliverBy time.Time
	// DeadlineMessage is the note on a step stopped by Deadline
	// (default "Worker deadline reached").
	DeadlineMessage string
}

// Deps are the things Run uses that tests and callers may replace.
type Deps struct {
	Logger     *slog.Logger
	HTTPClient *http.Client
	// Environ is the environment steps inherit (before secrets are removed);
	// nil means os.Environ().
	Environ []string
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
	r, err := newRunner(cfg, deps)
	if err != nil {
		return Outcome{}, err
	}
	if !opts.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, opts.Deadline)
		defer cancel()
	}
	r.events = opts.Events
	r.deadlineMsg = opts.DeadlineMessage
	r.deliverBy = opts.DeliverBy
	if r.deadlineMsg == "" {
		r.deadlineMsg = "Worker deadline reached"
	}
	return r.run(ctx, opts)
}

// runner holds what one claim-and-run needs; it lives for one Run.
type runner struct {
	cfg     *config.Config
	log     *slog.Logger
	client  *api.Client
	environ []string
	version string
	events  *EventWriter
	// redactor masks the running step's secrets in its output.
	redactor *redact.Redactor
	// deadlineMsg notes a step stopped by the run's deadline.
	deadlineMsg string
	// deliverBy bounds delivery after the step (zero: no bound).
	deliverBy time.Time
}

// workspaces is the workspace cache under workspace_dir.
func (r *runner) workspaces() *workspace.Cache {
	return &workspace.Cache{
		Root: filepath.Join(r.cfg.WorkspaceDir, "workspaces"),
		Fetch: func(ctx context.Context, ws, rev, etag string) (workspace.Tarball, error) {
			tb, err := r.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 10 * time.Second}).
				Workspace(ctx, ws, rev, etag)
			return workspace.Tarball{Body: tb.Body, Revision: tb.Revision, NotModified: tb.NotModified}, err
		},
		MaxRetained: r.cfg.MaxRetainedRevisions,
		Logger:      r.log,
	}
}

func newRunner(cfg *config.Config, deps Deps) (*runner, error) {
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
	return &runner{cfg: cfg, log: log, client: client, environ: env, version: version,
		redactor: redact.New(cfg.WorkerToken)}, nil
}

func (r *runner) run(ctx context.Context, opts Options) (Outcome, error) {
	// Processes that escape a step's group (double fork, setsid) are
	// reparented here, so they can be killed when the step ends; their
	// zombies are collected while it runs.
	if err := process.EnableSubreaper(); err != nil {
		r.log.Warn("cannot become child subreaper; processes that escape a step may outlive it", "error", err.Error())
	}
	reapCtx, stopReap := context.WithCancel(context.WithoutCancel(ctx))
	reapDone := make(chan struct{})
	go func() { defer close(reapDone); process.Reap(reapCtx, 5*time.Second) }()
	defer func() { stopReap(); <-reapDone }()
	// Results left behind by an earlier run go out before new work is
	// taken. Under a supervisor that is the supervisor's job.
	if opts.SupervisorPID == 0 {
		if err := r.deliverPending(ctx); err != nil {
			return Outcome{}, err
		}
	}
	id, fresh, err := r.identity(ctx, opts.WorkerID)
	if err != nil {
		return Outcome{}, err
	}
	out := Outcome{WorkerID: id}
	log := r.log.With(slog.String("worker_id", id))

	// Heartbeats run from here until the step is reported: a step of a
	// worker silent for 120 s is failed by the server (contract §8).
	// The id may change (a new registration); heartbeats follow it.
	var current atomic.Pointer[string]
	current.Store(&id)
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		r.heartbeat(hbCtx, &current, !fresh && opts.SupervisorPID == 0, opts.SupervisorPID)
	}()
	defer func() { stopHB(); <-hbDone }()

	step := opts.Step
	if step == nil {
		var newID string
		step, newID, err = r.claim(ctx, id, opts.Wait, log)
		id = newID
		current.Store(&newID)
		out.WorkerID = id
		if err != nil || step == nil {
			return out, err
		}
	}
	out.Claimed = true
	out.JobID, out.StepName = step.JobID, step.StepName
	res, err := r.runStep(ctx, id, step, log.With(slog.String("job_id", step.JobID), slog.String("step", step.StepName)))
	out.ExitCode, out.Signal, out.SignalNumber, out.Error, out.Delivered = res.ExitCode, res.Signal, res.SignalNumber, res.Error, res.Delivered
	r.events.Emit(Event{Kind: "done", Delivered: res.Delivered, ExitCode: res.ExitCode, Failed: !out.Succeeded(),
		Lines: res.Lines, Bytes: res.Bytes, Dropped: res.Dropped})
	return out, err
}

// heartbeat sends one at once (when the id was not just registered) and
// then every heartbeat interval until ctx ends. Failures are logged only:
// the step goes on, and the next beat may get through. A supervised child
// leaves heartbeats to its supervisor while the supervisor lives: once it
// is gone (its parent changed), the child heartbeats for itself until its
// step is reported.
func (r *runner) heartbeat(ctx context.Context, current *atomic.Pointer[string], now bool, supervisor int) {
	beat := func() {
		if supervisor != 0 && os.Getppid() == supervisor {
			return
		}
		id := *current.Load()
		if err := r.client.Heartbeat(ctx, id); err != nil && ctx.Err() == nil {
			r.log.Warn("heartbeat failed", slog.String("worker_id", id), slog.String("error", err.Error()))
		}
	}
	if now {
		beat()
	}
	tick := time.NewTicker(r.cfg.HeartbeatInterval())
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
