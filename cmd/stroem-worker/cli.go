package main

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/stroem-worker/stroem-worker/shared/config"
)

// CLI is the whole command line. Flags that override config keys are
// strings parsed like environment values, so "not given" is "".
type CLI struct {
	Globals

	ClaimAndRun ClaimAndRunCmd `cmd:"" name:"claim-and-run" help:"Claim one step, run it, deliver its result, exit."`
	Supervise   SuperviseCmd   `cmd:"" default:"withargs" help:"Long-running worker: register, heartbeat, run up to max_concurrent steps in child processes (the default command)."`
	ConfigCmd   ConfigCmd      `cmd:"" name:"config" help:"Inspect the configuration."`
	Demo        DemoCmd        `cmd:"" help:"Run a self-contained demo: a built-in dev server with sample steps and real claim-and-run workers."`
	Lambda      LambdaCmd      `cmd:"" help:"Run as an AWS Lambda custom runtime: one claim-and-run cycle per invocation (the default when AWS_LAMBDA_RUNTIME_API is set)."`
	DevServer   DevServerCmd   `cmd:"" name:"dev-server" help:"Run the built-in Strøm-compatible dev server on loopback, to try actions locally."`
	Version     VersionCmd     `cmd:"" help:"Print the version."`
}

// Globals are flags every command takes.
type Globals struct {
	Config  string      `short:"c" env:"STROEM_CONFIG" default:"worker-config.yaml" help:"Config file (YAML). A missing default file is fine: env and flags may configure everything."`
	Version versionFlag `name:"version" help:"Print the version and exit."`

	ServerURL              string `group:"overrides" name:"server-url" help:"Override server_url." placeholder:"URL"`
	WorkerName             string `group:"overrides" name:"worker-name" help:"Override worker_name."`
	WorkerTokenFile        string `group:"overrides" name:"worker-token-file" help:"Override worker_token_file (the token itself is never a flag: it would show in ps)." placeholder:"PATH"`
	WorkspaceDir           string `group:"overrides" name:"workspace-dir" help:"Override workspace_dir." placeholder:"DIR"`
	MaxConcurrent          string `group:"overrides" name:"max-concurrent" help:"Override max_concurrent." placeholder:"N"`
	PollIntervalSecs       string `group:"overrides" name:"poll-interval-secs" help:"Override poll_interval_secs." placeholder:"SECS"`
	Capabilities           string `group:"overrides" name:"capabilities" help:"Override capabilities (comma-separated)." placeholder:"LIST"`
	Tags                   string `group:"overrides" name:"tags" help:"Override tags (comma-separated)." placeholder:"LIST"`
	HeartbeatIntervalSecs  string `group:"overrides" name:"heartbeat-interval-secs" help:"Override heartbeat_interval_secs." placeholder:"SECS"`
	CancelPollIntervalSecs string `group:"overrides" name:"cancel-poll-interval-secs" help:"Override cancel_poll_interval_secs." placeholder:"SECS"`
	CancelSignal           string `group:"overrides" name:"cancel-signal" help:"Override cancel_signal (SIGTERM, SIGINT, ...)." placeholder:"SIG"`
	CancelGraceSecs        string `group:"overrides" name:"cancel-grace-secs" help:"Override cancel_grace_secs." placeholder:"SECS"`
	DeliveryTimeoutSecs    string `group:"overrides" name:"delivery-timeout-secs" help:"Override delivery_timeout_secs." placeholder:"SECS"`
	LogFormat              string `group:"overrides" name:"log-format" help:"Override log_format (text or json)." placeholder:"FORMAT"`
	LogLevel               string `group:"overrides" name:"log-level" help:"Override log_level (debug, info, warn, error)." placeholder:"LEVEL"`

	stdout, stderr io.Writer
}

// flagOverrides maps the flags given to config keys.
func (g *Globals) flagOverrides(extra map[string]string) map[string]string {
	m := map[string]string{}
	add := func(key, v string) {
		if v != "" {
			m[key] = v
		}
	}
	add("server_url", g.ServerURL)
	add("worker_name", g.WorkerName)
	add("worker_token_file", g.WorkerTokenFile)
	add("workspace_dir", g.WorkspaceDir)
	add("max_concurrent", g.MaxConcurrent)
	add("poll_interval_secs", g.PollIntervalSecs)
	add("capabilities", g.Capabilities)
	add("tags", g.Tags)
	add("heartbeat_interval_secs", g.HeartbeatIntervalSecs)
	add("cancel_poll_interval_secs", g.CancelPollIntervalSecs)
	add("cancel_signal", g.CancelSignal)
	add("cancel_grace_secs", g.CancelGraceSecs)
	add("delivery_timeout_secs", g.DeliveryTimeoutSecs)
	add("log_format", g.LogFormat)
	add("log_level", g.LogLevel)
	for k, v := range extra {
		add(k, v)
	}
	return m
}

// load builds the effective configuration: defaults < file < env < flags.
func (g *Globals) load(extra map[string]string) (*config.Config, error) {
	_, explicit := os.LookupEnv("STROEM_CONFIG")
	explicit = explicit || g.Config != "worker-config.yaml"
	cfg, err := config.Load(config.LoadOptions{
		Path:         g.Config,
		PathExplicit: explicit,
		Env:          environment(),
		Flags:        g.flagOverrides(extra),
	})
	if err != nil {
		return nil, &usageError{err}
	}
	return cfg, nil
}

// logger builds the worker log for cfg and reports config warnings.
func (g *Globals) logger(cfg *config.Config) *slog.Logger {
	log := newLogger(g.stderr, cfg.LogFormat, cfg.LogLevel)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	return log
}

// environment is the process environment for config loading, with the
// token that hideToken took out of it.
func environment() envMap {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	if envToken != "" {
		m[tokenEnv] = envToken
	}
	return m
}

// envMap looks variables up in a map (config loading can list it, to
// report unknown STROEM__ names).
type envMap map[string]string

func (m envMap) Lookup(k string) (string, bool) { v, ok := m[k]; return v, ok }
