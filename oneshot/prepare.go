package oneshot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
	"github.com/stroem-worker/stroem-worker/shared/redact"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/workspace"
)

// stepRun is one claimed step on its way through prepare, run and finish.
type stepRun struct {
	step              *api.Step
	workerID, attempt string
	key               string
	spool             *logstream.Spool
	log               *slog.Logger

	runner   runner.Runner
	job      *runner.Job
	redactor *redact.Redactor
	// dirsRoot holds the step's own directories; cleanup removes it.
	dirsRoot string
	cleanup  []func()
}

// failure is a step that failed before or instead of running: its text
// is reported with exit code -1 and logged as a worker-generated stderr
// line, as the server's own worker posts one before such a report.
func (s *stepRun) failure(msg string) stepResult {
	red := s.redactor
	if red == nil {
		red = redact.New("")
	}
	_ = s.spool.Append("stderr", time.Now(), red.Line([]byte(msg)))
	return stepResult{ExitCode: -1, Error: msg}
}

func (s *stepRun) close() {
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
}

// prepare makes the step ready to run, in the reference worker's order
// (contract §2): workspace, start report, spec, runner, directories,
// state, environment, secrets. It returns false with the result to
// report when the step cannot run.
func (w *worker) prepare(ctx context.Context, s *stepRun) (stepResult, bool) {
	step := s.step
	workDir := w.cfg.WorkspaceDir
	if step.Workspace != "" {
		// Transient failures (a restarting server, 503s) are retried for as
		// long as a result would be; only a lasting failure fails the step.
		wctx, cancel := context.WithTimeout(ctx, w.cfg.DeliveryTimeout())
		co, err := w.workspaces().Get(wctx, step.Workspace, step.Revision)
		cancel()
		if err != nil {
			// No start report: the server's own worker sends none either.
			return s.failure("Failed to download workspace: " + err.Error()), false
		}
		s.cleanup = append(s.cleanup, co.Release)
		workDir = co.Dir
	}
	startCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.cfg.DeliveryTimeout())
	err := w.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 10 * time.Second}).
		Start(startCtx, step.JobID, step.StepName, s.workerID)
	cancel()
	if err != nil {
		return s.failure("Failed to report step start: " + err.Error()), false
	}
	if step.StepName == "" {
		return s.failure("Failed to build run config: claimed step has no step_name"), false
	}
	spec, err := api.ParseActionSpec(step.ActionSpec)
	if err != nil {
		return s.failure("Failed to build run config: " + err.Error()), false
	}
	s.runner, err = w.runners.For(step.ActionType, step.Runner)
	if err != nil {
		return s.failure(err.Error()), false
	}
	s.dirsRoot = filepath.Join(w.cfg.WorkspaceDir, "steps", s.key)
	s.cleanup = append(s.cleanup, func() { os.RemoveAll(s.dirsRoot) })
	dirs, err := makeDirs(s.dirsRoot)
	if err != nil {
		return s.failure("Failed to build run config: " + err.Error()), false
	}
	if err := w.downloadState(ctx, step, dirs); err != nil {
		return s.failure("Failed to download state: " + err.Error()), false
	}
	worker := withoutSecrets(w.environ, w.cfg.WorkerToken)
	base, dirVars := s.runner.Environment(step, worker, dirs)
	env := stepEnv(base, spec, step, dirVars)
	// vals runs on this host whatever runs the step: it gets the worker's
	// environment (its backends' credentials, PATH) under the step's.
	valsEnv := append(slices.Clip(worker), env...)
	env, resolved, err := resolveRefs(ctx, env, valsEnv, pathLookup(valsEnv))
	if err != nil {
		return s.failure(err.Error()), false
	}
	s.redactor = redact.FromEnv(env, append(resolved, w.cfg.WorkerToken)...)
	s.job = &runner.Job{Step: step, Spec: spec, Workspace: workDir, Env: env, Dirs: dirs,
		WorkerID: s.workerID, Attempt: s.attempt, Key: s.key, Signal: w.cfg.CancelSignal(), Grace: w.cfg.CancelGrace()}
	return stepResult{}, true
}

// makeDirs creates a step's own directories under root.
func makeDirs(root string) (runner.Dirs, error) {
	d := runner.Dirs{
		Artifacts: filepath.Join(root, "artifacts"),
		State:     filepath.Join(root, "state"), StateOut: filepath.Join(root, "state-out"),
		GlobalState: filepath.Join(root, "global-state"), GlobalStateOut: filepath.Join(root, "global-state-out"),
	}
	for _, p := range []string{d.Artifacts, d.State, d.StateOut, d.GlobalState, d.GlobalStateOut} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return d, fmt.Errorf("creating step directory: %w", err)
		}
	}
	return d, nil
}

// workspaces is the workspace cache under workspace_dir.
func (w *worker) workspaces() *workspace.Cache {
	return &workspace.Cache{
		Root: filepath.Join(w.cfg.WorkspaceDir, "workspaces"),
		Fetch: func(ctx context.Context, ws, rev, etag string) (workspace.Tarball, error) {
			tb, err := w.client.WithRetry(api.Retry{Initial: 500 * time.Millisecond, Max: 10 * time.Second}).
				Workspace(ctx, ws, rev, etag)
			return workspace.Tarball{Body: tb.Body, Revision: tb.Revision, NotModified: tb.NotModified}, err
		},
		MaxRetained: w.cfg.MaxRetainedRevisions,
		Logger:      w.log,
	}
}
