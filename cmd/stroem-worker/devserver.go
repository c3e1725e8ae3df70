package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

// DevServerCmd is `stroem-worker dev-server`: the fake server on its own.
type DevServerCmd struct {
	Listen      string `default:"127.0.0.1:8080" help:"Address to listen on. Loopback only, unless --allow-remote."`
	Token       string `env:"STROEM_DEV_TOKEN" help:"Worker token the dev server accepts, at least 32 characters (default: a fixed, publicly known development token)."`
	AllowRemote bool   `name:"allow-remote" help:"Allow a non-loopback --listen address; needs your own --token or STROEM_DEV_TOKEN, since anyone who reaches the server with the token can run commands on its workers."`

	// worker is the binary the printed worker command runs (tests); empty
	// means this executable.
	worker string
}

// minDevToken is the shortest token a worker accepts (config validation).
const minDevToken = 32

// checkListen refuses to expose the dev server, whose default token is
// public, beyond loopback without an explicit flag and a token of the
// user's own.
func (d *DevServerCmd) checkListen() error {
	host, _, err := net.SplitHostPort(d.Listen)
	if err != nil {
		return &usageError{fmt.Errorf("--listen %q: %w (want host:port, such as 127.0.0.1:8080)", d.Listen, err)}
	}
	if isLoopback(host) {
		return nil
	}
	if !d.AllowRemote {
		return &usageError{fmt.Errorf("--listen %s is not a loopback address and the dev server's default token is public: use 127.0.0.1, or pass --allow-remote with your own --token (or STROEM_DEV_TOKEN)", d.Listen)}
	}
	if d.Token == "" || d.Token == fakeserver.DefaultToken {
		return &usageError{errors.New("--allow-remote needs your own token: pass --token or set STROEM_DEV_TOKEN (at least 32 characters)")}
	}
	if len(d.Token) < minDevToken {
		return &usageError{fmt.Errorf("--token is %d characters; workers need at least %d", len(d.Token), minDevToken)}
	}
	return nil
}

// isLoopback reports whether host names only the loopback interface. An
// empty host (":8080") is every interface; other names could resolve
// anywhere, so only "localhost" counts.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Run serves until interrupted.
func (d *DevServerCmd) Run(ctx context.Context, g *Globals) error {
	if err := d.checkListen(); err != nil {
		return err
	}
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
	if d.AllowRemote {
		host, _, _ := net.SplitHostPort(d.Listen)
		if !isLoopback(host) {
			log.Warn("dev server reachable from other hosts: anyone with the token can queue commands for its workers", slog.String("listen", ln.Addr().String()))
		}
	}
	worker := d.worker
	if worker == "" {
		if worker, err = os.Executable(); err != nil {
			worker = "stroem-worker"
		}
	}
	fmt.Fprint(g.stdout, devServerBanner("http://"+ln.Addr().String(), d.tokenExport(token), worker))
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

// tokenExport is the shell word that sets $TOKEN: the public default
// token itself, a reference to STROEM_DEV_TOKEN when it came from there
// (so a secret is not echoed), else the --token value the user typed.
func (d *DevServerCmd) tokenExport(token string) string {
	if d.Token != "" && os.Getenv("STROEM_DEV_TOKEN") == d.Token {
		return `"$STROEM_DEV_TOKEN"`
	}
	return shellQuote(token)
}

// devSampleJob is the job the banner queues. Its step prints an OUTPUT:
// line; the JSON goes to curl through a quoted here-document, so the shell
// leaves its quotes alone and the step's output is the object.
const devSampleJob = `{"task_name":"hello","steps":[{"step_name":"greet","action_spec":{"type":"script","script":"echo hi\necho 'OUTPUT: {\"ok\": true}'"}}]}`

// devServerBanner is what the dev server prints: lines to paste into sh
// or bash as they are, the token first since every command uses it.
func devServerBanner(url, tokenWord, worker string) string {
	return fmt.Sprintf(`Strøm dev server listening on %[1]s (worker API and /dev endpoints).
Paste these lines into a shell (sh or bash):

export URL=%[1]s TOKEN=%[2]s
# Queue a job; its id goes to $JOB:
JOB=$(curl -sS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' --data-binary @- "$URL/dev/jobs" <<'EOF'
%[3]s
EOF
)
JOB=${JOB#*'"job_id":"'}; JOB=${JOB%%%%'"'*}; echo "queued job $JOB"
# Run it with a worker (one step, then exit):
STROEM__SERVER_URL=$URL STROEM__WORKER_TOKEN=$TOKEN %[4]s claim-and-run --wait 1m
# The job, its steps (output: {"ok":true}) and logs:
curl -sS -H "Authorization: Bearer $TOKEN" "$URL/dev/jobs/$JOB"

`, url, tokenWord, devSampleJob, shellQuote(worker))
}

// shellQuote quotes s for sh when it holds anything but safe characters.
func shellQuote(s string) string {
	safe := s != ""
	for _, r := range s {
		if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,", r) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
