package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// serveHTTP serves /healthz, /readyz and /metrics on cfg.Listen. It
// returns the bound address and a stop function.
func (s *supervisor) serveHTTP(ctx context.Context, wg *sync.WaitGroup) (string, func(), error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("%w: listening on %s for health and metrics: %w; pick a free address for listen (--listen), or leave it empty", ErrListen, s.cfg.Listen, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason := s.notReady(); reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", s.metrics.reg.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("health server stopped", "error", err.Error())
		}
	})
	s.log.Info("serving health and metrics", "addr", ln.Addr().String())
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return ln.Addr().String(), stop, nil
}

// notReady says why the supervisor should not get work, or "".
func (s *supervisor) notReady() string {
	switch {
	case !s.registered.Load():
		return "not registered yet"
	case s.draining.Load():
		return "draining"
	}
	last := s.lastContact.Load()
	if limit := 3 * s.cfg.HeartbeatInterval(); time.Since(time.Unix(0, last)) > limit {
		return fmt.Sprintf("no answer from the server for over %s", limit)
	}
	return ""
}
