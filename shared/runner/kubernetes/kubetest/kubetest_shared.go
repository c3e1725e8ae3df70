package kubetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// startBudget caps how long a start may wait for readiness. A cold start
// takes 3-10 s on 2 busy cores; the test's own deadline, when sooner, wins.
const startBudget = 3 * time.Minute

// shared holds the servers of this test binary, one per Options, started on
// first use and stopped by Main.
var shared struct {
	mu      sync.Mutex
	inMain  bool
	stopped bool
	servers map[Options]*sharedServer
}

type sharedServer struct {
	once sync.Once
	s    *Server
	err  error
}

// Main runs the tests and then stops the servers they started; call it from
// TestMain. It does not return: it exits with the tests' code, or 1 when a
// server could not be stopped cleanly (a leaked process is a failure).
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "kubetest: stopping servers: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func stopShared() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.stopped = true
	var errs []error
	for _, ss := range shared.servers {
		if ss.s != nil {
			errs = append(errs, ss.s.Stop())
		}
	}
	shared.servers = nil
	return errors.Join(errs...)
}

// Start returns the test binary's shared server with AlwaysAllow
// authorization, starting it on first use. It skips the test when the
// binaries are not built (fails it when $CI is set). Without Main in
// TestMain every call starts a server of its own, stopped when the test
// ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{})
}

// StartRBAC is Start with RBAC authorization, a separate shared server.
func StartRBAC(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Options{Authorization: RBAC})
}

// StartWith is Start for any Options.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	requireBinaries(t)
	if opts.Authorization == "" {
		opts.Authorization = AlwaysAllow
	}
	ctx, cancel := startContext(t)
	defer cancel()

	shared.mu.Lock()
	if !shared.inMain || shared.stopped {
		shared.mu.Unlock()
		t.Logf("kubetest: TestMain does not call kubetest.Main, so this test starts a server of its own")
		s, err := New(ctx, opts)
		if err != nil {
			t.Fatalf("kubetest: %v", err)
		}
		t.Cleanup(func() {
			if err := s.Stop(); err != nil {
				t.Errorf("kubetest: stopping server: %v", err)
			}
		})
		return s
	}
	if shared.servers == nil {
		shared.servers = map[Options]*sharedServer{}
	}
	ss := shared.servers[opts]
	if ss == nil {
		ss = &sharedServer{}
		shared.servers[opts] = ss
	}
	shared.mu.Unlock()

	ss.once.Do(func() {
		start := time.Now()
		ss.s, ss.err = New(ctx, opts)
		if ss.err == nil {
			t.Logf("kubetest: started %s server at %s in %v", opts.Authorization, ss.s.Host(), time.Since(start).Round(time.Millisecond))
		}
	})
	if ss.err != nil {
		t.Fatalf("kubetest: %v", ss.err)
	}
	return ss.s
}

// startContext bounds a start by startBudget and by the test's deadline
// (go test -timeout), leaving time for the test to report.
func startContext(t testing.TB) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(startBudget)
	if tt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := tt.Deadline(); ok {
			if d = d.Add(-5 * time.Second); d.Before(deadline) {
				deadline = d
			}
		}
	}
	return context.WithDeadline(context.Background(), deadline)
}
