package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/claim"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/delivery"
	"github.com/stroem-worker/stroem-worker/shared/process"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/runner/local"
)

// ErrListen: the health and metrics address (listen) cannot be bound:
// in use, or not an address of this host. A configuration error.
var ErrListen = errors.New("listen address unusable")

// Deps are what Run uses that callers and tests may replace.
type Deps struct {
	Logger     *slog.Logger
	HTTPClient *http.Client
	// Executable is the binary forked per step (default: this one). Its
	// command line is Args followed by "claim-and-run --handoff-fd 3".
	Executable string
	Args       []string
	// Argv0 is the child's argv[0] (default: ours).
	Argv0 string
	// ChildStderr receives the children's own log output (default os.Stderr).
	// It should be a file, not a pipe the supervisor reads: a child must
	// be able to write after the supervisor died.
	ChildStderr *os.File
	// Signals delivers SIGTERM/SIGINT. Run starts stopping when ctx ends
	// (the first signal); a second signal on this channel cancels steps.
	Signals <-chan os.Signal
	Version string
	// Runners stop what a dead child's step left running (by the handle
	// its runner recorded); nil knows local processes only.
	Runners runner.Set
	// Ready, when set, is called once the supervisor is registered and
	// serving (tests wait on it instead of sleeping).
	Ready func(workerID, listenAddr string)
}

// Run supervises until stopped. It returns nil after a clean drain.
func Run(ctx context.Context, cfg *config.Config, deps Deps) error {
	s, err := newSupervisor(cfg, deps)
	if err != nil {
		return err
	}
	return s.run(ctx)
}

type supervisor struct {
	cfg       *config.Config
	deps      Deps
	log       *slog.Logger
	client    *api.Client
	metrics   *metrics
	deliverer *delivery.Deliverer
	// claimMu is held around a claim and the superseding of the step's
	// earlier attempts, and around every completion a pending delivery
	// sends: no stale result can go out between the two.
	claimMu sync.Mutex

	mu       sync.Mutex
	workerID string
	children map[*child]struct{}
	// childWG counts child watchers and background deliveries.
	childWG sync.WaitGroup
	// second and third close on the second and third stop signal.
	second, third chan struct{}

	// registeredAt is when the last registration succeeded (claim loop only).
	registeredAt time.Time

	// abandon is a worker id to give up before the next claim.
	abandon atomic.Pointer[string]

	draining   atomic.Bool
	registered atomic.Bool
	// lastContact is the unix nano time of the last answer from the server.
	lastContact atomic.Int64
}

func newSupervisor(cfg *config.Config, deps Deps) (*supervisor, error) {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = api.NewHTTPClient(cfg.ConnectTimeout())
	}
	if deps.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding own executable: %w", err)
		}
		deps.Executable = exe
	}
	if deps.Argv0 == "" {
		deps.Argv0 = os.Args[0]
	}
	if deps.ChildStderr == nil {
		deps.ChildStderr = os.Stderr
	}
	if deps.Version == "" {
		deps.Version = "dev"
	}
	if deps.Runners == nil {
		deps.Runners = runner.Set{runner.Local: &local.Runner{Log: deps.Logger}}
	}
	if err := os.MkdirAll(cfg.WorkspaceDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating workspace_dir: %w", err)
	}
	client := api.New(api.Options{
		BaseURL:        cfg.ServerURL,
		Token:          cfg.WorkerToken,
		HTTPClient:     deps.HTTPClient,
		RequestTimeout: cfg.RequestTimeout(),
		UserAgent:      "stroem-worker/" + deps.Version,
		Logger:         deps.Logger,
	})
	s := &supervisor{
		cfg:      cfg,
		deps:     deps,
		log:      deps.Logger,
		client:   client,
		metrics:  newMetrics(),
		children: map[*child]struct{}{},
		second:   make(chan struct{}),
		third:    make(chan struct{}),
	}
	s.deliverer = &delivery.Deliverer{Root: delivery.Root(cfg.WorkspaceDir), Client: client, Log: deps.Logger,
		MaxAge: cfg.ResultMaxAge(), Kill: deps.Runners.Kill, Guard: &s.claimMu, Unanswered: s.unanswered,
		Withheld: func(reason string) { s.metrics.withheld.WithLabelValues(reason).Inc() }}
	return s, nil
}

// unanswered asks for worker id id to be given up: a step result sent
// under it got no answer. The claim loop registers a fresh id before it
// claims again; the old one keeps its heartbeats only while children
// claimed with it run (childIDs), then goes silent.
func (s *supervisor) unanswered(id string) {
	s.abandon.Store(&id)
}

func (s *supervisor) id() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.workerID
}

func (s *supervisor) contact() { s.lastContact.Store(time.Now().UnixNano()) }

func (s *supervisor) run(ctx context.Context) error {
	// Orphans of children that die are reparented here and swept.
	if err := process.EnableSubreaper(); err != nil {
		s.log.Warn("cannot become child subreaper; escaped grandchildren of crashed children may survive", "error", err.Error())
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	wg.Go(func() { s.watchSignals(bg) })
	wg.Go(func() { process.Reap(bg, 5*time.Second) })

	var listenAddr string
	if s.cfg.Listen != "" {
		addr, stop, err := s.serveHTTP(bg, &wg)
		if err != nil {
			return err
		}
		defer stop()
		listenAddr = addr
	}
	if err := s.registerUntil(ctx); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	// Results that earlier processes left behind go out first.
	// Bounded, and cut short by a stop signal; what is left is retried after
	// every heartbeat.
	pctx, cancelPending := context.WithTimeout(ctx, s.cfg.DeliveryTimeout())
	_, err := s.deliverer.Pending(pctx, "the worker was restarted")
	cancelPending()
	if err != nil {
		return err
	}
	// Then what dead workers of this home left running (pods, containers)
	// whose steps nobody owns; a failure only logs.
	sctx, cancelSweep := context.WithTimeout(ctx, 2*s.cfg.RequestTimeout())
	if n, err := s.deps.Runners.Sweep(sctx, s.deliverer.Own); err != nil && sctx.Err() == nil {
		s.log.Warn("sweeping what dead workers left running", "error", err.Error())
	} else if n > 0 {
		s.log.Info("removed what dead workers left running", "count", n)
	}
	cancelSweep()
	wg.Go(func() { s.heartbeatLoop(bg) })
	if s.deps.Ready != nil {
		s.deps.Ready(s.id(), listenAddr)
	}
	err = s.claimLoop(ctx)
	s.draining.Store(true)
	s.metrics.draining.Set(1)
	s.stop()
	return err
}

// registerUntil registers, retrying transient failures with capped
// backoff (the api client's) until it succeeds or ctx ends; 401 is fatal.
func (s *supervisor) registerUntil(ctx context.Context) error {
	id, err := s.client.WithRetry(api.Retry{Initial: time.Second, Max: 60 * time.Second}).
		Register(ctx, claim.Registration(s.cfg, s.deps.Version))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.mu.Lock()
	s.workerID = id
	s.mu.Unlock()
	s.registered.Store(true)
	s.registeredAt = time.Now()
	s.contact()
	s.log.Info("registered worker", "worker_id", id, "name", s.cfg.WorkerName, "max_concurrent", s.cfg.MaxConcurrent)
	return nil
}

// heartbeatLoop beats at once and then every interval until ctx ends.
// retryPending delivers spools left undelivered (a child that gave up, a
// server that was down), a slice of time per heartbeat so that beats are
// never held up for long; delivery resumes where it stopped.
func (s *supervisor) retryPending(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HeartbeatInterval()/2)
	defer cancel()
	if n, err := s.deliverer.Pending(ctx, "its worker process ended without reporting it"); err != nil {
		s.log.Warn("delivering pending results", "error", err.Error())
	} else if n > 0 {
		s.log.Info("delivered pending results", "steps", n)
	}
}

// childIDs are the worker ids of running children other than the current
// one: ids the supervisor registered before (after a 500 or an abandoned
// claim) that still have steps running under them.
func (s *supervisor) childIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{s.workerID: true}
	var ids []string
	for c := range s.children {
		if !seen[c.workerID] {
			seen[c.workerID] = true
			ids = append(ids, c.workerID)
		}
	}
	return ids
}

func (s *supervisor) heartbeatLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.HeartbeatInterval())
	defer tick.Stop()
	for {
		err := s.client.Heartbeat(ctx, s.id())
		// Steps claimed under an earlier registration still run under that
		// id; without its heartbeats the server would fail them (§8).
		for _, id := range s.childIDs() {
			if herr := s.client.Heartbeat(ctx, id); herr != nil && err == nil {
				err = herr
			}
		}
		switch {
		case err == nil:
			s.contact()
			s.metrics.lastHeartbeat.Store(time.Now().UnixNano())
			s.retryPending(ctx)
		case ctx.Err() == nil:
			s.metrics.heartbeatFailures.Inc()
			s.log.Warn("heartbeat failed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
