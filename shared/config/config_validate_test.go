package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/config"
)

func TestValidateRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"server_url missing", map[string]string{"STROEM__SERVER_URL": ""},
			"server_url: required; set server_url in the config file, STROEM__SERVER_URL or --server-url"},
		{"server_url not http", map[string]string{"STROEM__SERVER_URL": "ftp://x"}, `server_url (from env): "ftp://x" is not an http(s) URL`},
		{"server_url no host", map[string]string{"STROEM__SERVER_URL": "http://"}, "is not an http(s) URL"},
		{"server_url not a URL", map[string]string{"STROEM__SERVER_URL": "stroem:8080"}, "is not an http(s) URL"},
		{"server_url query", map[string]string{"STROEM__SERVER_URL": "http://x/?a=1"}, "must not have a query or fragment"},
		{"worker_token missing", map[string]string{"STROEM__WORKER_TOKEN": ""},
			"worker_token: required; set it in the config file, STROEM__WORKER_TOKEN or worker_token_file"},
		{"worker_token short", map[string]string{"STROEM__WORKER_TOKEN": token[:31]},
			"worker_token (from env): must be at least 32 characters (the server refuses shorter tokens), got 31; set it in the config file, STROEM__WORKER_TOKEN or worker_token_file"},
		{"worker_name empty", map[string]string{"STROEM__WORKER_NAME": " "}, "worker_name (from env): must not be empty"},
		{"max_concurrent 0", map[string]string{"STROEM__MAX_CONCURRENT": "0"}, "max_concurrent (from env): must be at least 1, got 0"},
		{"poll_interval 0", map[string]string{"STROEM__POLL_INTERVAL_SECS": "0"}, "poll_interval_secs (from env): must be more than 0 seconds"},
		{"poll_interval huge", map[string]string{"STROEM__POLL_INTERVAL_SECS": "1e12"}, "poll_interval_secs (from env): must be more than 0 seconds (and at most"},
		{"workspace_dir empty", map[string]string{"STROEM__WORKSPACE_DIR": " "}, "workspace_dir (from env): must not be empty"},
		{"capabilities empty", map[string]string{"STROEM__CAPABILITIES": ","}, "capabilities (from env): must not be empty; set the kinds of step this worker runs, e.g. capabilities: [script]"},
		{"capabilities agent", map[string]string{"STROEM__CAPABILITIES": "agent"}, `"agent" is a Strøm capability this worker does not have`},
		{"capabilities unknown", map[string]string{"STROEM__CAPABILITIES": "python"}, `unknown capability "python"; this worker knows script (old name: shell), docker and kubernetes`},
		{"pull policy", map[string]string{"STROEM__DOCKER__PULL_POLICY": "sometimes"}, `docker.pull_policy (from env): "sometimes" is not one of if-not-present, always, never`},
		{"kube namespace", map[string]string{"STROEM__KUBERNETES__NAMESPACE": "Stroem_Jobs"}, `kubernetes.namespace (from env): "Stroem_Jobs" is not a namespace name`},
		{"kube configmap", map[string]string{"STROEM__KUBERNETES__RUNNER_STARTUP_CONFIGMAP": "a..b"}, `kubernetes.runner_startup_configmap (from env): "a..b" is not a ConfigMap name`},
		{"kube init image", map[string]string{"STROEM__KUBERNETES__INIT_IMAGE": " "}, "kubernetes.init_image (from env): must not be empty"},
		{"tags with ability", map[string]string{"STROEM__TAGS": "gpu,docker"}, `tags (from env): "docker" is a capability, not a tag; move it to capabilities`},
		{"tags with script", map[string]string{"STROEM__TAGS": "script"}, `"script" is a capability, not a tag`},
		{"docker host", map[string]string{"STROEM__DOCKER__HOST": "ssh://me@host"}, `docker.host (from env): "ssh://me@host" is not an engine address the Docker runner can use; want unix:///path/to/docker.sock or tcp://host:port`},
		{"docker host path", map[string]string{"STROEM__DOCKER__HOST": "/var/run/docker.sock"}, `"/var/run/docker.sock" is not an engine address`},
		{"request_timeout 0", map[string]string{"STROEM__REQUEST_TIMEOUT_SECS": "0"}, "request_timeout_secs (from env): must be more than 0"},
		{"connect_timeout negative", map[string]string{"STROEM__CONNECT_TIMEOUT_SECS": "-1"}, "connect_timeout_secs (from env): must be more than 0"},
		{"max_retained negative", map[string]string{"STROEM__MAX_RETAINED_REVISIONS": "-1"}, "max_retained_revisions (from env): must be 0 or more, got -1"},
		{"heartbeat 0", map[string]string{"STROEM__HEARTBEAT_INTERVAL_SECS": "0"}, "heartbeat_interval_secs (from env): must be more than 0"},
		{"heartbeat too long", map[string]string{"STROEM__HEARTBEAT_INTERVAL_SECS": "61"},
			"heartbeat_interval_secs (from env): must be at most 60 (the server fails the steps of a worker silent for 120 s), got 61"},
		{"poll_interval_max below poll_interval", map[string]string{"STROEM__POLL_INTERVAL_SECS": "2", "STROEM__POLL_INTERVAL_MAX_SECS": "1"}, "poll_interval_max_secs (from env): must be 0 (no idle back-off) or at least poll_interval_secs (2), got 1"},
		{"poll_interval_max negative", map[string]string{"STROEM__POLL_INTERVAL_MAX_SECS": "-4"}, "poll_interval_max_secs (from env): must be 0 or more seconds"},
		{"cancel_poll 0", map[string]string{"STROEM__CANCEL_POLL_INTERVAL_SECS": "0"}, "cancel_poll_interval_secs (from env): must be more than 0"},
		{"cancel_grace negative", map[string]string{"STROEM__CANCEL_GRACE_SECS": "-0.5"}, "cancel_grace_secs (from env): must be 0 or more seconds"},
		{"cancel_signal unknown", map[string]string{"STROEM__CANCEL_SIGNAL": "TERM"},
			`cancel_signal (from env): "TERM" is not one of SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGKILL`},
		{"drain_timeout negative", map[string]string{"STROEM__DRAIN_TIMEOUT_SECS": "-1"}, "drain_timeout_secs (from env): must be 0 or more seconds"},
		{"on_signal unknown", map[string]string{"STROEM__ON_SIGNAL": "ignore"}, `on_signal (from env): "ignore" is not one of drain, cancel`},
		{"delivery_timeout 0", map[string]string{"STROEM__DELIVERY_TIMEOUT_SECS": "0"}, "delivery_timeout_secs (from env): must be more than 0"},
		{"listen no port", map[string]string{"STROEM__LISTEN": "9090"}, `listen (from env): "9090" is not host:port; use e.g. :9090`},
		{"listen bad port", map[string]string{"STROEM__LISTEN": "localhost:http"}, `"localhost:http" is not host:port`},
		{"listen port too big", map[string]string{"STROEM__LISTEN": ":70000"}, `":70000" is not host:port`},
		{"log_format unknown", map[string]string{"STROEM__LOG_FORMAT": "xml"}, `log_format (from env): "xml" is not one of text, json`},
		{"log_level unknown", map[string]string{"STROEM__LOG_LEVEL": "trace"}, `log_level (from env): "trace" is not one of debug, info, warn, error`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, "", with(tt.env), nil)
			wantErr(t, err, tt.want)
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"token of exactly 32", map[string]string{"STROEM__WORKER_TOKEN": token[:32]}},
		{"http URL with path", map[string]string{"STROEM__SERVER_URL": "http://127.0.0.1:8080/stroem/"}},
		{"heartbeat 60", map[string]string{"STROEM__HEARTBEAT_INTERVAL_SECS": "60"}},
		{"zero grace, drain and retained", map[string]string{"STROEM__CANCEL_GRACE_SECS": "0", "STROEM__DRAIN_TIMEOUT_SECS": "0", "STROEM__MAX_RETAINED_REVISIONS": "0"}},
		{"listen port only", map[string]string{"STROEM__LISTEN": ":9090"}},
		{"listen loopback any port", map[string]string{"STROEM__LISTEN": "127.0.0.1:0"}},
		{"listen IPv6", map[string]string{"STROEM__LISTEN": "[::1]:9090"}},
		{"SIGKILL cancel on signal", map[string]string{"STROEM__CANCEL_SIGNAL": "SIGKILL", "STROEM__ON_SIGNAL": "cancel"}},
		{"json debug", map[string]string{"STROEM__LOG_FORMAT": "json", "STROEM__LOG_LEVEL": "debug"}},
		{"exclusive with tags", map[string]string{"STROEM__EXCLUSIVE": "true", "STROEM__TAGS": "gpu,linux"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := load(t, "", with(tt.env), nil); err != nil {
				t.Errorf("Load() = %v, want nil", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	_, err := load(t, "", with(map[string]string{"STROEM__MAX_CONCURRENT": "0", "STROEM__LOG_LEVEL": "loud", "STROEM__WORKER_TOKEN": "tok-xyz-42"}), nil)
	wantErr(t, err, "invalid configuration:\n  ", "max_concurrent", "log_level", "worker_token")
	if strings.Contains(err.Error(), "tok-xyz-42") {
		t.Errorf("Load() = %q, shows the token", err)
	}
	multi, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Load() = %T, want an error wrapping each problem", err)
	}
	if got := len(multi.Unwrap()); got != 3 {
		t.Errorf("Load() problems = %d, want 3", got)
	}
}

func TestValidateDirect(t *testing.T) {
	t.Parallel()
	if err := (&config.Config{}).Validate(); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("zero Config.Validate() = %v, want ErrInvalid", err)
	}
	c, err := load(t, "", baseEnv(), nil)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() of a loaded Config = %v, want nil", err)
	}
}
