package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

// DevServerCmd is `stroem-worker dev-server`: the fake server on its own.
type DevServerCmd struct {
	Listen string `default:"127.0.0.1:8080" help:"Address to listen on (keep it on loopback)."`
	Token  string `env:"STROEM_DEV_TOKEN" help:"Worker token the dev server accepts (default: a fixed development token)."`
}

// Run serves until interrupted.
func (d *DevServerCmd) Run(ctx context.Context, g *Globals) error {
	token := d.Token
	if token == "" {
		token = fakeserver.DefaultToken
	}
	log := newLogger(g.stderr, "text", "info")
	srv := fakeserver.New(fakeserver.Options{Token: token, Logger: log})
	ln, err := net.Listen("tcp", d.Listen)
	if err != nil {
		return &usageError{fmt.Errorf("listening on %s: %w", d.Listen, err)}
	}
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(g.stdout, `Strøm dev server listening on %s (worker API and /dev endpoints)

Point a worker at it:
  STROEM__SERVER_URL=%s STROEM__WORKER_TOKEN=<the token> stroem-worker claim-and-run --wait 1m

Queue a job:
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"task_name":"hello","steps":[{"step_name":"greet","action_spec":{"type":"script","script":"echo hi; echo OUTPUT: {\"ok\":true}"}}]}' \
    %s/dev/jobs
Inspect it:
  curl -s -H "Authorization: Bearer $TOKEN" %s/dev/jobs/<job_id>
`, url, url, url, url)
	if d.Token == "" {
		fmt.Fprintf(g.stdout, "\nDevelopment token: %s\n", token)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = hs.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("dev server stopped", slog.String("error", err.Error()))
	}
	return err
}
