package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrInvalid matches (with errors.Is) every error Load and Validate return:
// the configuration, not the server or the step, is at fault.
var ErrInvalid = errors.New("invalid configuration")

// Source is where a key's effective value came from.
type Source string

// The layers, lowest precedence first.
const (
	SourceDefault Source = "default"
	SourceFile    Source = "file"
	SourceEnv     Source = "env"
	SourceFlag    Source = "flag"
)

// DefaultWorkspaceDir is workspace_dir when nothing sets it.
const DefaultWorkspaceDir = "/var/tmp/stroem-worker"

// Config is the worker's effective configuration. The JSON names are the
// YAML keys; the JSON form is what a supervisor hands its children.
type Config struct {
	ServerURL        string  `json:"server_url"`
	WorkerToken      string  `json:"worker_token"`
	WorkerTokenFile  string  `json:"worker_token_file"`
	WorkerName       string  `json:"worker_name"`
	MaxConcurrent    int     `json:"max_concurrent"`
	PollIntervalSecs float64 `json:"poll_interval_secs"`
	// PollIntervalMaxSecs: idle, the wait between claims doubles from
	// poll_interval_secs up to this; 0 means no back-off (validation
	// refuses values between 0 and poll_interval_secs).
	PollIntervalMaxSecs  float64  `json:"poll_interval_max_secs"`
	WorkspaceDir         string   `json:"workspace_dir"`
	Capabilities         []string `json:"capabilities"`
	Tags                 []string `json:"tags"`
	Exclusive            bool     `json:"exclusive"`
	RequestTimeoutSecs   float64  `json:"request_timeout_secs"`
	ConnectTimeoutSecs   float64  `json:"connect_timeout_secs"`
	MaxRetainedRevisions int      `json:"max_retained_revisions"`

	// HeartbeatIntervalSecs is at most 60: the server fails the steps of a
	// worker it has not heard from for 120 s.
	HeartbeatIntervalSecs  float64 `json:"heartbeat_interval_secs"`
	CancelPollIntervalSecs float64 `json:"cancel_poll_interval_secs"`
	CancelGraceSecs        float64 `json:"cancel_grace_secs"`
	// CancelSignalName is cancel_signal, e.g. "SIGTERM"; see CancelSignal.
	CancelSignalName string  `json:"cancel_signal"`
	DrainTimeoutSecs float64 `json:"drain_timeout_secs"`
	// OnSignal is what the first SIGTERM/SIGINT does: "drain" or "cancel".
	OnSignal string `json:"on_signal"`
	// DeliveryTimeoutSecs is how long undelivered logs and results are retried.
	DeliveryTimeoutSecs float64 `json:"delivery_timeout_secs"`
	// ResultMaxAgeSecs: a spooled result older than this is not sent (the
	// step was long since failed and maybe retried by the server).
	ResultMaxAgeSecs float64 `json:"result_max_age_secs"`
	// RunnerImage is the image of script steps run by the Docker and
	// Kubernetes runners; "" means DefaultRunnerImage.
	RunnerImage string `json:"runner_image"`
	// DockerHost is the Docker engine (docker.host); "" means DOCKER_HOST,
	// then the default socket.
	DockerHost string `json:"docker.host"`
	// DockerPullPolicy is docker.pull_policy: if-not-present, always, never.
	DockerPullPolicy string `json:"docker.pull_policy"`
	// DockerNetwork is docker.network: the step containers' network mode
	// ("" for the engine's default bridge; "none", "host", a network name).
	DockerNetwork string `json:"docker.network"`
	// KubeNamespace is kubernetes.namespace; "" means the service account's
	// namespace in a cluster, else the kubeconfig context's, else default.
	KubeNamespace string `json:"kubernetes.namespace"`
	// KubeInitImage is kubernetes.init_image (fetches the workspace).
	KubeInitImage string `json:"kubernetes.init_image"`
	// KubeStartupConfigMap is kubernetes.runner_startup_configmap.
	KubeStartupConfigMap string `json:"kubernetes.runner_startup_configmap"`
	// Listen is host:port for health and metrics; "" serves nothing.
	Listen    string `json:"listen"`
	LogFormat string `json:"log_format"`
	LogLevel  string `json:"log_level"`

	// Origins maps every key to the layer its value came from.
	Origins map[string]Source `json:"-"`
	// Warnings are problems that do not stop the worker (ignored keys,
	// unknown STROEM__ variables); callers log or print them.
	Warnings []string `json:"-"`
}

// key is one configuration key: its YAML name and where it lives in Config.
type key struct {
	name  string
	field func(c *Config) any // *string, *int, *float64, *bool or *[]string
}

// keys lists every key in the order config check prints them.
var keys = []key{
	{"server_url", func(c *Config) any { return &c.ServerURL }},
	{"worker_token", func(c *Config) any { return &c.WorkerToken }},
	{"worker_token_file", func(c *Config) any { return &c.WorkerTokenFile }},
	{"worker_name", func(c *Config) any { return &c.WorkerName }},
	{"max_concurrent", func(c *Config) any { return &c.MaxConcurrent }},
	{"poll_interval_secs", func(c *Config) any { return &c.PollIntervalSecs }},
	{"poll_interval_max_secs", func(c *Config) any { return &c.PollIntervalMaxSecs }},
	{"workspace_dir", func(c *Config) any { return &c.WorkspaceDir }},
	{"capabilities", func(c *Config) any { return &c.Capabilities }},
	{"tags", func(c *Config) any { return &c.Tags }},
	{"exclusive", func(c *Config) any { return &c.Exclusive }},
	{"request_timeout_secs", func(c *Config) any { return &c.RequestTimeoutSecs }},
	{"connect_timeout_secs", func(c *Config) any { return &c.ConnectTimeoutSecs }},
	{"max_retained_revisions", func(c *Config) any { return &c.MaxRetainedRevisions }},
	{"heartbeat_interval_secs", func(c *Config) any { return &c.HeartbeatIntervalSecs }},
	{"cancel_poll_interval_secs", func(c *Config) any { return &c.CancelPollIntervalSecs }},
	{"cancel_grace_secs", func(c *Config) any { return &c.CancelGraceSecs }},
	{"cancel_signal", func(c *Config) any { return &c.CancelSignalName }},
	{"drain_timeout_secs", func(c *Config) any { return &c.DrainTimeoutSecs }},
	{"on_signal", func(c *Config) any { return &c.OnSignal }},
	{"delivery_timeout_secs", func(c *Config) any { return &c.DeliveryTimeoutSecs }},
	{"result_max_age_secs", func(c *Config) any { return &c.ResultMaxAgeSecs }},
	{"runner_image", func(c *Config) any { return &c.RunnerImage }},
	{"docker.host", func(c *Config) any { return &c.DockerHost }},
	{"docker.pull_policy", func(c *Config) any { return &c.DockerPullPolicy }},
	{"docker.network", func(c *Config) any { return &c.DockerNetwork }},
	{"kubernetes.namespace", func(c *Config) any { return &c.KubeNamespace }},
	{"kubernetes.init_image", func(c *Config) any { return &c.KubeInitImage }},
	{"kubernetes.runner_startup_configmap", func(c *Config) any { return &c.KubeStartupConfigMap }},
	{"listen", func(c *Config) any { return &c.Listen }},
	{"log_format", func(c *Config) any { return &c.LogFormat }},
	{"log_level", func(c *Config) any { return &c.LogLevel }},
}

// aliases maps other accepted names to their key (the Rust worker's
// canonical name is workspace_cache_dir; its example file uses workspace_dir).
var aliases = map[string]string{"workspace_cache_dir": "workspace_dir"}

// rustOnly are the Rust worker's keys for what this worker does not do.
// They are accepted so a shared config file or Helm chart works.
var rustOnly = []string{"agents"}

const ignoredNote = "ignored: this worker does not run agent steps"

// DefaultRunnerImage is the image of script steps run in containers when
// runner_image is not set (the reference worker's default).
const DefaultRunnerImage = "ghcr.io/fremvaerk/stroem-runner:latest"

// DefaultKubeInitImage is kubernetes.init_image's default (the reference
// worker's): it needs sh, curl and tar with gzip.
const DefaultKubeInitImage = "curlimages/curl:latest"

// HasCapability reports whether the worker advertises capability c.
func (c *Config) HasCapability(name string) bool { return slices.Contains(c.Capabilities, name) }

// defaults returns a Config holding the built-in defaults.
func defaults() *Config {
	name, _ := os.Hostname() // on failure, validation asks for worker_name
	c := &Config{
		WorkerName:             name,
		MaxConcurrent:          4,
		PollIntervalSecs:       2,
		WorkspaceDir:           DefaultWorkspaceDir,
		Capabilities:           []string{"script"},
		Tags:                   []string{},
		RequestTimeoutSecs:     30,
		ConnectTimeoutSecs:     10,
		MaxRetainedRevisions:   2,
		HeartbeatIntervalSecs:  30,
		CancelPollIntervalSecs: 2,
		CancelGraceSecs:        10,
		CancelSignalName:       "SIGTERM",
		DrainTimeoutSecs:       300,
		OnSignal:               "drain",
		DeliveryTimeoutSecs:    600,
		DockerPullPolicy:       "if-not-present",
		KubeInitImage:          DefaultKubeInitImage,
		ResultMaxAgeSecs:       86400,
		LogFormat:              "text",
		LogLevel:               "info",
		Origins:                map[string]Source{},
	}
	for _, k := range keys {
		c.Origins[k.name] = SourceDefault
	}
	return c
}

// PollInterval is poll_interval_secs.
func (c *Config) PollInterval() time.Duration { return secs(c.PollIntervalSecs) }

// PollIntervalMax is poll_interval_max_secs (0: no idle back-off).
func (c *Config) PollIntervalMax() time.Duration { return secs(c.PollIntervalMaxSecs) }

// HeartbeatInterval is heartbeat_interval_secs.
func (c *Config) HeartbeatInterval() time.Duration { return secs(c.HeartbeatIntervalSecs) }

// CancelPollInterval is cancel_poll_interval_secs.
func (c *Config) CancelPollInterval() time.Duration { return secs(c.CancelPollIntervalSecs) }

// CancelGrace is cancel_grace_secs.
func (c *Config) CancelGrace() time.Duration { return secs(c.CancelGraceSecs) }

// DrainTimeout is drain_timeout_secs.
func (c *Config) DrainTimeout() time.Duration { return secs(c.DrainTimeoutSecs) }

// DeliveryTimeout is delivery_timeout_secs.
func (c *Config) DeliveryTimeout() time.Duration { return secs(c.DeliveryTimeoutSecs) }

// RequestTimeout is request_timeout_secs.
func (c *Config) RequestTimeout() time.Duration { return secs(c.RequestTimeoutSecs) }

// ResultMaxAge is result_max_age_secs.
func (c *Config) ResultMaxAge() time.Duration { return secs(c.ResultMaxAgeSecs) }

// ConnectTimeout is connect_timeout_secs.
func (c *Config) ConnectTimeout() time.Duration { return secs(c.ConnectTimeoutSecs) }

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// signals are the accepted cancel_signal values.
var signals = map[string]syscall.Signal{
	"SIGTERM": syscall.SIGTERM,
	"SIGINT":  syscall.SIGINT,
	"SIGHUP":  syscall.SIGHUP,
	"SIGQUIT": syscall.SIGQUIT,
	"SIGUSR1": syscall.SIGUSR1,
	"SIGUSR2": syscall.SIGUSR2,
	"SIGKILL": syscall.SIGKILL,
}

// signalNames is signals' keys in the order error messages list them.
const signalNames = "SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGKILL"

// CancelSignal is the signal cancel_signal names, sent to a step's process
// group first when it is cancelled; SIGTERM if the name is not valid.
func (c *Config) CancelSignal() syscall.Signal {
	if s, ok := signals[c.CancelSignalName]; ok {
		return s
	}
	return syscall.SIGTERM
}

// Entry is one line of `config check`.
type Entry struct {
	Key    string
	Value  string // the token is shown as "<redacted, N chars>"
	Source Source
}

// Redacted lists every key with its effective value and origin, with the
// worker token replaced by its length.
func (c *Config) Redacted() []Entry {
	out := make([]Entry, 0, len(keys))
	for _, k := range keys {
		v := format(k.field(c))
		if k.name == "worker_token" && c.WorkerToken != "" {
			v = fmt.Sprintf("<redacted, %d chars>", len(c.WorkerToken))
		}
		out = append(out, Entry{Key: k.name, Value: v, Source: c.Origins[k.name]})
	}
	return out
}

// String is the redacted configuration, so printing a Config by mistake
// does not print the token.
func (c *Config) String() string {
	var b strings.Builder
	for i, e := range c.Redacted() {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%q", e.Key, e.Value)
	}
	return b.String()
}

// LogValue is the redacted configuration, for slog.
func (c *Config) LogValue() slog.Value {
	entries := c.Redacted()
	attrs := make([]slog.Attr, len(entries))
	for i, e := range entries {
		attrs[i] = slog.String(e.Key, e.Value)
	}
	return slog.GroupValue(attrs...)
}

// format renders a field as config check shows it and as env and flags
// spell it.
func format(field any) string {
	switch p := field.(type) {
	case *string:
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *float64:
		return strconv.FormatFloat(*p, 'f', -1, 64)
	case *bool:
		return strconv.FormatBool(*p)
	case *[]string:
		return strings.Join(*p, ",")
	}
	panic(fmt.Sprintf("config: unsupported field type %T", field))
}
