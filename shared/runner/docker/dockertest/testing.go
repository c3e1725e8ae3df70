package dockertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// TestingM is what TestMain hands over: *testing.M, or a wrapper of it.
// goleak.VerifyTestMain takes the same shape.
type TestingM interface {
	Run() int
}

// shared is the engine of this test binary.
var shared struct {
	mu      sync.Mutex
	inMain  bool // M(m).Run is running the tests
	started bool
	engine  *Engine
	err     error
}

// Main runs the tests and stops the shared engine if one was started,
// then exits. Call it from TestMain:
//
//	func TestMain(m *testing.M) { dockertest.Main(m) }
func Main(m *testing.M) {
	os.Exit(M(m).Run())
}

// M wraps m so that its Run stops the shared engine after the tests. Use it
// to combine with other TestMain wrappers:
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(dockertest.M(m)) }
func M(m TestingM) TestingM {
	return mainWrapper{m}
}

type mainWrapper struct{ m TestingM }

func (w mainWrapper) Run() int {
	shared.mu.Lock()
	shared.inMain = true
	shared.mu.Unlock()

	code := w.m.Run()

	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.inMain = false
	var u *UnavailableError
	if errors.As(shared.err, &u) {
		fmt.Fprintf(os.Stderr, "dockertest: container tests skipped: %v\n", u)
	}
	if shared.engine == nil {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := shared.engine.Stop(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "dockertest: stopping the shared engine: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	shared.engine = nil
	return code
}

// Shared returns the engine of this test binary, starting it (and
// importing the images) on first use. It skips tb when the engine cannot
// run on this machine (unless STROEM_TEST_ENGINE_REQUIRED=1) and fails it
// when the engine did not start. TestMain must run the tests through Main
// or M, which stop the engine at the end.
func Shared(tb testing.TB) *Engine {
	tb.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		tb.Fatal("dockertest.Shared: TestMain must run the tests with dockertest.Main(m) or dockertest.M(m), which stop the engine")
	}
	if !shared.started {
		shared.started = true
		ctx, cancel := startContext(tb)
		shared.engine, shared.err = Start(ctx, Options{Logf: tb.Logf})
		cancel()
	}
	if shared.err != nil {
		var u *UnavailableError
		if errors.As(shared.err, &u) && os.Getenv(EnvRequired) != "1" {
			tb.Skipf("dockertest: %v (set %s=1 to fail instead)", u, EnvRequired)
		}
		tb.Fatalf("dockertest: starting the shared engine: %v", shared.err)
	}
	return shared.engine
}

// startContext bounds the engine start by the test binary's own deadline
// (-test.timeout): half of what is left, so a stuck engine fails the test
// with the engine's log instead of the binary's timeout panic.
func startContext(tb testing.TB) (context.Context, context.CancelFunc) {
	t, ok := tb.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return context.WithTimeout(context.Background(), readyTimeout)
	}
	deadline, ok := t.Deadline()
	if !ok {
		return context.WithTimeout(context.Background(), readyTimeout)
	}
	return context.WithTimeout(context.Background(), time.Until(deadline)/2)
}
