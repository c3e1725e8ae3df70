// Command stroem-worker runs Strøm workflow steps: claim-and-run (one
// step, then exit) or supervise (a long-running worker forking a
// claim-and-run child per step).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/alecthomas/kong"
)

// envToken is the worker token that came in the environment, taken out of
// it by hideToken.
var envToken string

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() { os.Exit(process()) }

// process is what a stroem-worker process does, from its first
// instruction to its exit code (tests run it in a process of its own).
func process() int {
	token, err := hideToken()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stroem-worker: warning:", err, "(the token stays readable in /proc/<pid>/environ)")
	}
	if token != "" {
		// Read by config loading like any STROEM__ variable; the process's
		// initial environment, what /proc shows, no longer holds it.
		envToken = token
	}
	// STROEM_CPUPROFILE=path writes a CPU profile of this process (for
	// scripts/bench and profiling; see README).
	if path := os.Getenv("STROEM_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				code := run(os.Args[1:], os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				return code
			}
		}
	}
	return run(os.Args[1:], os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var cli CLI
	// kong calls Exit after --help; remember it and return instead of
	// exiting from inside the parser.
	exited, exitWith := false, 0
	parser, err := newParser(ctx, &cli, stdout, stderr, func(code int) { exited, exitWith = true, code })
	if err != nil {
		fmt.Fprintln(stderr, "stroem-worker:", err)
		return ExitInternal
	}
	if len(args) == 0 && os.Getenv("AWS_LAMBDA_RUNTIME_API") != "" {
		// Deployed as a Lambda `bootstrap` with no arguments.
		args = []string{"lambda"}
	}
	kctx, err := parser.Parse(args)
	if exited {
		return exitWith
	}
	if err != nil {
		fmt.Fprintln(stderr, "stroem-worker:", err)
		return ExitUsage
	}
	cli.Globals.stdout, cli.Globals.stderr = stdout, stderr
	err = kctx.Run(&cli.Globals)
	code := exitCode(err)
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) || ee.msg != "" {
			fmt.Fprintln(stderr, "stroem-worker:", err)
		}
	}
	return code
}

// newLogger builds the worker's own logger (never the step's output).
func newLogger(w io.Writer, format, level string) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lvl}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// newParser builds the command-line parser.
func newParser(ctx context.Context, cli *CLI, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(cli,
		kong.Name("stroem-worker"),
		kong.Description("A worker for the Strøm workflow orchestration platform.\n\n"+exitCodeHelp()),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.BindTo(ctx, (*context.Context)(nil)),
	)
}
