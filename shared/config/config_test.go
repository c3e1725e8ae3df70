package config_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sethvargo/go-envconfig"

	"github.com/stroem-worker/stroem-worker/shared/config"
)

const token = "0123456789abcdef0123456789abcdef-secret" // 39 chars

// baseEnv is the least environment that makes a valid config.
func baseEnv() map[string]string {
	return map[string]string{
		"STROEM__SERVER_URL":   "https://stroem.example.com",
		"STROEM__WORKER_TOKEN": token,
	}
}

// with returns baseEnv plus extra (an empty value deletes).
func with(extra map[string]string) map[string]string {
	m := baseEnv()
	for k, v := range extra {
		if v == "" {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

// writeFile writes content to name in a fresh directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// load loads with the given file content ("" = no file), env and flags.
func load(t *testing.T, file string, env, flags map[string]string) (*config.Config, error) {
	t.Helper()
	opts := config.LoadOptions{Env: envconfig.MapLookuper(env), Flags: flags}
	if file != "" {
		opts.Path, opts.PathExplicit = writeFile(t, "worker-config.yaml", file), true
	}
	return config.Load(opts)
}

// entries picks some keys out of Redacted.
func entries(c *config.Config, keys ...string) []config.Entry {
	var out []config.Entry
	for _, e := range c.Redacted() {
		for _, k := range keys {
			if e.Key == k {
				out = append(out, e)
			}
		}
	}
	return out
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	const file = "worker_name: from-file\nmax_concurrent: 5\npoll_interval_secs: 0.5\ntags: [file]\nlog_level: debug\n"
	keys := []string{"worker_name", "max_concurrent", "poll_interval_secs", "tags", "log_level"}
	tests := []struct {
		name  string
		file  string
		env   map[string]string
		flags map[string]string
		want  []config.Entry
	}{
		{
			name:  "defaults",
			flags: map[string]string{"worker_name": "w"},
			want: []config.Entry{
				{"worker_name", "w", config.SourceFlag},
				{"max_concurrent", "4", config.SourceDefault},
				{"poll_interval_secs", "2", config.SourceDefault},
				{"tags", "", config.SourceDefault},
				{"log_level", "info", config.SourceDefault},
			},
		},
		{
			name: "file over defaults",
			file: file,
			want: []config.Entry{
				{"worker_name", "from-file", config.SourceFile},
				{"max_concurrent", "5", config.SourceFile},
				{"poll_interval_secs", "0.5", config.SourceFile},
				{"tags", "file", config.SourceFile},
				{"log_level", "debug", config.SourceFile},
			},
		},
		{
			name: "env over file",
			file: file,
			env:  map[string]string{"STROEM__WORKER_NAME": "from-env", "STROEM__MAX_CONCURRENT": "6", "STROEM__TAGS": "a, b"},
			want: []config.Entry{
				{"worker_name", "from-env", config.SourceEnv},
				{"max_concurrent", "6", config.SourceEnv},
				{"poll_interval_secs", "0.5", config.SourceFile},
				{"tags", "a,b", config.SourceEnv},
				{"log_level", "debug", config.SourceFile},
			},
		},
		{
			name:  "flag over env over file",
			file:  file,
			env:   map[string]string{"STROEM__WORKER_NAME": "from-env", "STROEM__MAX_CONCURRENT": "6", "STROEM__LOG_LEVEL": "warn"},
			flags: map[string]string{"worker_name": "from-flag", "poll_interval_secs": "0.05", "log_level": "error"},
			want: []config.Entry{
				{"worker_name", "from-flag", config.SourceFlag},
				{"max_concurrent", "6", config.SourceEnv},
				{"poll_interval_secs", "0.05", config.SourceFlag},
				{"tags", "file", config.SourceFile},
				{"log_level", "error", config.SourceFlag},
			},
		},
		{
			name:  "flag over default without file or env",
			flags: map[string]string{"worker_name": "f", "max_concurrent": "9", "tags": "x,y", "poll_interval_secs": "1", "log_level": "warn"},
			want: []config.Entry{
				{"worker_name", "f", config.SourceFlag},
				{"max_concurrent", "9", config.SourceFlag},
				{"poll_interval_secs", "1", config.SourceFlag},
				{"tags", "x,y", config.SourceFlag},
				{"log_level", "warn", config.SourceFlag},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.file, with(tt.env), tt.flags)
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if diff := cmp.Diff(tt.want, entries(c, keys...)); diff != "" {
				t.Errorf("Load() entries (-want +got):\n%s", diff)
			}
			for _, e := range tt.want {
				if got := c.Origins[e.Key]; got != e.Source {
					t.Errorf("Origins[%q] = %q, want %q", e.Key, got, e.Source)
				}
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(t, "", baseEnv(), nil)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	host, _ := os.Hostname()
	want := &config.Config{
		ServerURL:              "https://stroem.example.com",
		WorkerToken:            token,
		WorkerName:             host,
		MaxConcurrent:          4,
		PollIntervalSecs:       2,
		WorkspaceDir:           "/var/tmp/stroem-worker",
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
		ResultMaxAgeSecs:       86400,
		DockerPullPolicy:       "if-not-present",
		KubeInitImage:          config.DefaultKubeInitImage,
		LogFormat:              "text",
		LogLevel:               "info",
	}
	if diff := cmp.Diff(want, c, cmpIgnoreMeta()); diff != "" {
		t.Errorf("Load() (-want +got):\n%s", diff)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("Load().Warnings = %q, want none", c.Warnings)
	}
	for k, src := range c.Origins {
		want := config.SourceDefault
		if k == "server_url" || k == "worker_token" {
			want = config.SourceEnv
		}
		if src != want {
			t.Errorf("Origins[%q] = %q, want %q", k, src, want)
		}
	}
}

func cmpIgnoreMeta() cmp.Option {
	return cmp.FilterPath(func(p cmp.Path) bool {
		s := p.String()
		return s == "Origins" || s == "Warnings"
	}, cmp.Ignore())
}

func TestDurations(t *testing.T) {
	t.Parallel()
	c, err := load(t, "", with(map[string]string{
		"STROEM__POLL_INTERVAL_SECS":        "0.05",
		"STROEM__HEARTBEAT_INTERVAL_SECS":   "15",
		"STROEM__CANCEL_POLL_INTERVAL_SECS": "0.25",
		"STROEM__CANCEL_GRACE_SECS":         "0",
		"STROEM__DRAIN_TIMEOUT_SECS":        "60",
		"STROEM__DELIVERY_TIMEOUT_SECS":     "1.5",
		"STROEM__REQUEST_TIMEOUT_SECS":      "7",
		"STROEM__CONNECT_TIMEOUT_SECS":      "3",
		"STROEM__CANCEL_SIGNAL":             "SIGUSR1",
	}), nil)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	got := []any{c.PollInterval(), c.HeartbeatInterval(), c.CancelPollInterval(), c.CancelGrace(),
		c.DrainTimeout(), c.DeliveryTimeout(), c.RequestTimeout(), c.ConnectTimeout(), c.CancelSignal()}
	want := []any{50 * time.Millisecond, 15 * time.Second, 250 * time.Millisecond, time.Duration(0),
		time.Minute, 1500 * time.Millisecond, 7 * time.Second, 3 * time.Second, syscall.SIGUSR1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("durations and signal (-want +got):\n%s", diff)
	}
}

func TestRedactedHidesToken(t *testing.T) {
	t.Parallel()
	c, err := load(t, "", baseEnv(), nil)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	want := []config.Entry{{"worker_token", "<redacted, 39 chars>", config.SourceEnv}}
	if diff := cmp.Diff(want, entries(c, "worker_token")); diff != "" {
		t.Errorf("Redacted() worker_token (-want +got):\n%s", diff)
	}
	for _, e := range c.Redacted() {
		if strings.Contains(e.Value, token) {
			t.Errorf("Redacted() entry %q shows the token", e.Key)
		}
	}
	if s := c.String(); strings.Contains(s, token) || !strings.Contains(s, "<redacted, 39 chars>") {
		t.Errorf("String() = %q, want the token redacted", s)
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("loaded", "config", c)
	if s := logged.String(); strings.Contains(s, token) || !strings.Contains(s, `"worker_token":"<redacted, 39 chars>"`) {
		t.Errorf("slog output = %q, want the token redacted", s)
	}
	if got, want := len(c.Redacted()), 32; got != want {
		t.Errorf("len(Redacted()) = %d, want %d (one per key)", got, want)
	}
}

// The supervisor hands its Config to children as JSON: the values,
// token included, must survive; Origins and Warnings are not sent.
func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	c, err := load(t, "", with(map[string]string{"STROEM__TAGS": "gpu", "STROEM__RUNNER_IMAGE": "x"}), nil)
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var got config.Config
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, &got, cmpIgnoreMeta()); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	if got.Origins != nil || got.Warnings != nil {
		t.Errorf("JSON carried Origins %v / Warnings %q, want neither", got.Origins, got.Warnings)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate() after round trip = %v", err)
	}
}
