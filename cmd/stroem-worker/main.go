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
	"strings"
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
	if len(args) == 2 && args[0] == "claim-and-run" && args[1] == "--handoff" {
		// A supervisor's child: everything comes over the handoff pipe, so
		// the command line needs no parser (building kong's model by
		// reflection is a good part of what a short step costs).
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		return report(stderr, (&ClaimAndRunCmd{Handoff: true}).Run(ctx, &Globals{stdout: stdout, stderr: stderr}))
	}
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
		fmt.Fprintln(stderr, "stroem-worker:", explainParseError(parser, err))
		return ExitUsage
	}
	cli.Globals.stdout, cli.Globals.stderr = stdout, stderr
	return report(stderr, kctx.Run(&cli.Globals))
}

// report prints a command's error (unless it only carries an exit code)
// and returns the process exit code for it.
func report(stderr io.Writer, err error) int {
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) || ee.msg != "" {
			fmt.Fprintln(stderr, "stroem-worker:", err)
		}
	}
	return exitCode(err)
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
		// "--max-concurrent -2" is a value (refused by validation with a
		// reason), not a short flag kong does not know.
		kong.WithHyphenPrefixedParameters(true),
		kong.ExplicitGroups([]kong.Group{{Key: "overrides", Title: "Config overrides (each sets the config key of the same name; see `config check`):"}}),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.BindTo(ctx, (*context.Context)(nil)),
	)
}

// explainParseError adds what kong leaves out: an unknown word where a
// command belongs (the default command takes no arguments) gets the list
// of commands and the closest one.
func explainParseError(parser *kong.Kong, err error) string {
	word, ok := strings.CutPrefix(err.Error(), "unexpected argument ")
	if !ok || strings.HasPrefix(word, "-") {
		return err.Error()
	}
	var names []string
	best, bestDist := "", 4
	for _, c := range parser.Model.Children {
		if c.Hidden {
			continue
		}
		names = append(names, c.Name)
		if d := levenshtein(word, c.Name); d < bestDist {
			best, bestDist = c.Name, d
		}
	}
	msg := fmt.Sprintf("unknown command %q", word)
	if best != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", best)
	}
	return msg + "; commands: " + strings.Join(names, ", ")
}

// levenshtein is the edit distance of a and b.
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
