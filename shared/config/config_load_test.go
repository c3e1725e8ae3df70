package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sethvargo/go-envconfig"

	"github.com/stroem-worker/stroem-worker/shared/config"
)

// wantErr checks that err is a config error containing every part and
// never the token.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Load() = nil, want an error containing %q", parts)
	}
	if !errors.Is(err, config.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("Load() = %q, want it to contain %q", err, p)
		}
	}
	if strings.Contains(err.Error(), token) {
		t.Errorf("Load() = %q, shows the token", err)
	}
}

func TestLoadFileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		want []string
	}{
		{"unknown key with suggestion", "worker_name: x\npol_interval_secs: 3\n",
			[]string{`worker-config.yaml:2: unknown key "pol_interval_secs" (did you mean "poll_interval_secs"?)`}},
		{"unknown alias typo", "workspace_cach_dir: /x\n",
			[]string{`worker-config.yaml:1: unknown key "workspace_cach_dir" (did you mean "workspace_cache_dir"?)`}},
		{"unknown key without suggestion", "frobnicate: 1\n",
			[]string{`worker-config.yaml:1: unknown key "frobnicate"`}},
		{"malformed", "worker_name: x\nserver_url: [unclosed\n",
			[]string{"worker-config.yaml:", "malformed YAML"}},
		{"bad indentation", "worker_name: x\n  tags: [a]\n bad\n",
			[]string{"worker-config.yaml:2: malformed YAML"}},
		{"malformed first line", "a: b: c\n",
			[]string{"worker-config.yaml:1: malformed YAML: mapping values are not allowed in this context"}},
		{"wrong type int", "worker_name: x\nmax_concurrent: lots\n",
			[]string{`worker-config.yaml:2: max_concurrent: "lots" is not a whole number`}},
		{"wrong type float", "poll_interval_secs: soon\n",
			[]string{`worker-config.yaml:1: poll_interval_secs: "soon" is not a number of seconds`}},
		{"wrong type bool", "exclusive: maybe\n",
			[]string{`worker-config.yaml:1: exclusive: "maybe" is not true or false`}},
		{"list for scalar", "worker_name: [a, b]\n",
			[]string{"worker-config.yaml:1: worker_name: expected a single value, found a list"}},
		{"mapping for list", "capabilities: {script: true}\n",
			[]string{"worker-config.yaml:1: capabilities: expected a list like [a, b], found a mapping"}},
		{"nested list", "tags:\n  - [a]\n",
			[]string{"worker-config.yaml:1: tags: expected a list of names, found a nested list at line 2"}},
		{"not a mapping", "- a\n- b\n",
			[]string{"worker-config.yaml:1: expected a mapping of keys to values"}},
		{"duplicate key", "worker_name: a\nworker_name: b\n",
			[]string{"worker-config.yaml:2: worker_name is set twice (also at line 1)"}},
		{"alias conflict", "workspace_dir: /a\nworkspace_cache_dir: /b\n",
			[]string{"worker-config.yaml:2: workspace_cache_dir and workspace_dir (at line 1) are the same setting with different values"}},
		{"two documents", "worker_name: a\n---\nworker_name: b\n",
			[]string{"only one YAML document"}},
		{"every problem at once", "pol_interval_secs: 1\nmax_concurrent: x\nexclusive: 2x\n",
			[]string{`unknown key "pol_interval_secs"`, "max_concurrent:", "exclusive:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tt.file, baseEnv(), nil)
			wantErr(t, err, tt.want...)
		})
	}
}

func TestLoadFileAccepted(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file string
		want       []config.Entry
	}{
		{"empty", "", []config.Entry{{"worker_name", hostname(), config.SourceDefault}}},
		{"comment only", "# nothing yet\n", []config.Entry{{"worker_name", hostname(), config.SourceDefault}}},
		{"document marker only", "---\n", []config.Entry{{"worker_name", hostname(), config.SourceDefault}}},
		{"null value keeps default", "worker_name:\n", []config.Entry{{"worker_name", hostname(), config.SourceDefault}}},
		{"quoted number", "max_concurrent: \"3\"\n", []config.Entry{{"max_concurrent", "3", config.SourceFile}}},
		{"anchor and alias", "cancel_grace_secs: &s 5\ndrain_timeout_secs: *s\n", []config.Entry{
			{"cancel_grace_secs", "5", config.SourceFile}, {"drain_timeout_secs", "5", config.SourceFile}}},
		{"comma string as list", "tags: a, b\n", []config.Entry{{"tags", "a,b", config.SourceFile}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.file, baseEnv(), nil)
			if err != nil {
				t.Fatalf("Load(%q) = %v", tt.file, err)
			}
			var keys []string
			for _, e := range tt.want {
				keys = append(keys, e.Key)
			}
			if diff := cmp.Diff(tt.want, entries(c, keys...)); diff != "" {
				t.Errorf("Load(%q) entries (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name     string
		path     string
		explicit bool
		wantErr  bool
	}{
		{"explicit missing file is an error", missing, true, true},
		{"missing default file is fine", missing, false, false},
		{"no path at all", "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(config.LoadOptions{Path: tt.path, PathExplicit: tt.explicit, Env: envconfig.MapLookuper(baseEnv())})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Load() = %v, want nil", err)
				}
				return
			}
			wantErr(t, err, missing, "--config")
		})
	}
}

func TestLoadUnreadableFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir() // a directory cannot be read as a file, even by root
	_, err := config.Load(config.LoadOptions{Path: dir, Env: envconfig.MapLookuper(baseEnv())})
	wantErr(t, err, dir)
}

func TestWorkspaceAlias(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		flags   map[string]string
		want    string
		wantSrc config.Source
		wantErr string
	}{
		{name: "file alias", file: "workspace_cache_dir: /a\n", want: "/a", wantSrc: config.SourceFile},
		{name: "file both agree", file: "workspace_dir: /a\nworkspace_cache_dir: /a\n", want: "/a", wantSrc: config.SourceFile},
		{name: "env alias", env: map[string]string{"STROEM__WORKSPACE_CACHE_DIR": "/e"}, want: "/e", wantSrc: config.SourceEnv},
		{name: "env both agree", env: map[string]string{"STROEM__WORKSPACE_CACHE_DIR": "/e", "STROEM__WORKSPACE_DIR": "/e"}, want: "/e", wantSrc: config.SourceEnv},
		{name: "env name over file alias", file: "workspace_cache_dir: /a\n", env: map[string]string{"STROEM__WORKSPACE_DIR": "/e"}, want: "/e", wantSrc: config.SourceEnv},
		{name: "flag alias", flags: map[string]string{"workspace_cache_dir": "/f"}, want: "/f", wantSrc: config.SourceFlag},
		{name: "env both differ", env: map[string]string{"STROEM__WORKSPACE_CACHE_DIR": "/e", "STROEM__WORKSPACE_DIR": "/x"},
			wantErr: "STROEM__WORKSPACE_CACHE_DIR: workspace_cache_dir and workspace_dir (at STROEM__WORKSPACE_DIR) are the same setting with different values; keep one"},
		{name: "flag both differ", flags: map[string]string{"workspace_cache_dir": "/e", "workspace_dir": "/x"},
			wantErr: "are the same setting with different values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.file, with(tt.env), tt.flags)
			if tt.wantErr != "" {
				wantErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if c.WorkspaceDir != tt.want || c.Origins["workspace_dir"] != tt.wantSrc {
				t.Errorf("WorkspaceDir = %q from %q, want %q from %q", c.WorkspaceDir, c.Origins["workspace_dir"], tt.want, tt.wantSrc)
			}
		})
	}
}

func TestCapabilitiesShell(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		env  map[string]string
	}{
		{name: "file shell", file: "capabilities: [shell]\n"},
		{name: "file shell and script", file: "capabilities: [shell, script]\n"},
		{name: "env shell", env: map[string]string{"STROEM__CAPABILITIES": "shell"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.file, with(tt.env), nil)
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if diff := cmp.Diff([]string{"script"}, c.Capabilities); diff != "" {
				t.Errorf("Capabilities (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{`capabilities: "shell" is the old name of "script"; using script`}, c.Warnings); diff != "" {
				t.Errorf("Warnings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnvLists(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{"gpu", []string{"gpu"}},
		{"gpu, linux", []string{"gpu", "linux"}},
		{" gpu ,, linux ,", []string{"gpu", "linux"}},
		{"", []string{}}, // set but empty: overrides the file's list
		{" , ", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			env := baseEnv()
			env["STROEM__TAGS"] = tt.in
			c, err := load(t, "tags: [from-file]\n", env, nil)
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if diff := cmp.Diff(tt.want, c.Tags); diff != "" {
				t.Errorf("STROEM__TAGS=%q: Tags (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestEnvAndFlagLists(t *testing.T) {
	t.Parallel()
	c, err := load(t, "", with(map[string]string{"STROEM__CAPABILITIES": " script , ", "STROEM__TAGS": "a, b,,c"}),
		map[string]string{"tags": " x ,y "})
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if diff := cmp.Diff([]string{"script"}, c.Capabilities); diff != "" {
		t.Errorf("Capabilities (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"x", "y"}, c.Tags); diff != "" {
		t.Errorf("Tags (-want +got):\n%s", diff)
	}
}

func TestEnvAndFlagParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		flags map[string]string
		want  string
	}{
		{name: "env int", env: map[string]string{"STROEM__MAX_CONCURRENT": "four"}, want: `STROEM__MAX_CONCURRENT: "four" is not a whole number`},
		{name: "env float", env: map[string]string{"STROEM__POLL_INTERVAL_SECS": "NaN"}, want: `STROEM__POLL_INTERVAL_SECS: "NaN" is not a number of seconds`},
		{name: "env bool", env: map[string]string{"STROEM__EXCLUSIVE": "maybe"}, want: `STROEM__EXCLUSIVE: "maybe" is not true or false`},
		{name: "flag int", flags: map[string]string{"max_concurrent": "x"}, want: `--max-concurrent: "x" is not a whole number`},
		{name: "flag unknown key", flags: map[string]string{"pol_interval_secs": "1"}, want: `flag for unknown key "pol_interval_secs" (did you mean "poll_interval_secs"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, "", with(tt.env), tt.flags)
			wantErr(t, err, tt.want)
		})
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	const file = "worker_name: w\nrunner_image: img\ndocker:\n  host: unix:///x\nkubernetes:\n  namespace: n\nagents: {}\n"
	env := with(map[string]string{
		"STROEM__AGENTS__MODEL":                        "x",
		"STROEM__KUBERNETES__RUNNER_STARTUP_CONFIGMAP": "cm",
		"STROEM__POL_INTERVAL_SECS":                    "1",
		"STROEM__FROBNICATE":                           "1",
		"STROEM_CONFIG":                                "/etc/x.yaml", // the config path, not a key
		"HOME":                                         "/root",
	})
	path := writeFile(t, "worker-config.yaml", file)
	c, err := config.Load(config.LoadOptions{Path: path, Env: envconfig.MapLookuper(env)})
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	for i, w := range c.Warnings {
		c.Warnings[i] = strings.TrimPrefix(w, filepath.Dir(path)+string(filepath.Separator))
	}
	want := []string{
		"worker-config.yaml:7: agents: ignored: this worker does not run agent steps",
		"STROEM__AGENTS__MODEL: ignored: this worker does not run agent steps",
		"STROEM__FROBNICATE: unknown variable, ignored",
		"STROEM__POL_INTERVAL_SECS: unknown variable, ignored (did you mean STROEM__POLL_INTERVAL_SECS?)",
	}
	if diff := cmp.Diff(want, c.Warnings); diff != "" {
		t.Errorf("Warnings (-want +got):\n%s", diff)
	}
	// The container runners' sections load, from the file and the env.
	got := []string{c.RunnerImage, c.DockerHost, c.KubeNamespace, c.KubeStartupConfigMap, string(c.Origins["kubernetes.runner_startup_configmap"])}
	if diff := cmp.Diff([]string{"img", "unix:///x", "n", "cm", "env"}, got); diff != "" {
		t.Errorf("runner sections (-want +got):\n%s", diff)
	}
}

func TestSectionErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ file, want string }{
		{"docker:\n  hots: x\n", `:2: unknown key "docker.hots" (did you mean "docker.host"?)`},
		{"docker: yes\n", `:1: docker: expected a section of keys (host, pull_policy, network), found a value`},
		{"docker:\n", ""},
		{"docker: {}\n", ""},
	} {
		path := writeFile(t, "worker-config.yaml", tt.file)
		_, err := config.Load(config.LoadOptions{Path: path, Env: envconfig.MapLookuper(with(nil))})
		if tt.want == "" {
			if err != nil {
				t.Errorf("Load(%q) = %v, want nil", tt.file, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%q) = %v, want an error containing %q", tt.file, err, tt.want)
		}
	}
}

// A Lookuper that cannot be listed still gets the Rust-only warning for
// the plain keys; unknown names cannot be found.
func TestWarningsUnlistableEnv(t *testing.T) {
	t.Parallel()
	env := with(map[string]string{"STROEM__AGENTS": "x", "STROEM__NOPE": "1"})
	lk := envconfig.LookuperFunc(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	c, err := config.Load(config.LoadOptions{Env: lk})
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	want := []string{"STROEM__AGENTS: ignored: this worker does not run agent steps"}
	if diff := cmp.Diff(want, c.Warnings); diff != "" {
		t.Errorf("Warnings (-want +got):\n%s", diff)
	}
}

func TestTokenFile(t *testing.T) {
	t.Parallel()
	tokenPath := writeFile(t, "token", "\n  "+token+"\n")
	emptyPath := writeFile(t, "empty", " \n")
	shortPath := writeFile(t, "short", "too-short\n")
	missing := filepath.Join(t.TempDir(), "no-token")
	tests := []struct {
		name    string
		file    string
		env     map[string]string
		flags   map[string]string
		wantSrc config.Source
		wantErr []string
	}{
		{name: "from file key", file: "worker_token_file: " + tokenPath + "\n", env: map[string]string{"STROEM__WORKER_TOKEN": ""}, wantSrc: config.SourceFile},
		{name: "from env", env: map[string]string{"STROEM__WORKER_TOKEN": "", "STROEM__WORKER_TOKEN_FILE": tokenPath}, wantSrc: config.SourceEnv},
		{name: "from flag", env: map[string]string{"STROEM__WORKER_TOKEN": ""}, flags: map[string]string{"worker_token_file": tokenPath}, wantSrc: config.SourceFlag},
		{name: "both token and file", flags: map[string]string{"worker_token_file": tokenPath},
			wantErr: []string{"worker_token (from env) and worker_token_file (from flag) are both set; keep only one"}},
		{name: "missing file", env: map[string]string{"STROEM__WORKER_TOKEN": "", "STROEM__WORKER_TOKEN_FILE": missing},
			wantErr: []string{"worker_token_file:", missing, "check the path"}},
		{name: "empty file", env: map[string]string{"STROEM__WORKER_TOKEN": "", "STROEM__WORKER_TOKEN_FILE": emptyPath},
			wantErr: []string{"worker_token_file: " + emptyPath + " is empty"}},
		{name: "short token in file", env: map[string]string{"STROEM__WORKER_TOKEN": "", "STROEM__WORKER_TOKEN_FILE": shortPath},
			wantErr: []string{"worker_token (from worker_token_file " + shortPath + "): must be at least 32 characters", "put the whole token in " + shortPath}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(t, tt.file, with(tt.env), tt.flags)
			if tt.wantErr != nil {
				wantErr(t, err, tt.wantErr...)
				return
			}
			if err != nil {
				t.Fatalf("Load() = %v", err)
			}
			if c.WorkerToken != token {
				t.Errorf("WorkerToken has %d chars, want the %d of the file, trimmed", len(c.WorkerToken), len(token))
			}
			// The value came from the file, whichever layer named the file.
			if got, want := c.Origins["worker_token"], config.Source("worker_token_file "+tokenPath); got != want {
				t.Errorf("Origins[worker_token] = %q, want %q", got, want)
			}
			if got := c.Origins["worker_token_file"]; got != tt.wantSrc {
				t.Errorf("Origins[worker_token_file] = %q, want %q", got, tt.wantSrc)
			}
		})
	}
}

func TestLoadFromOSEnvironment(t *testing.T) {
	// t.Setenv: not parallel.
	t.Setenv("STROEM__SERVER_URL", "http://from-os-env:8080/")
	t.Setenv("STROEM__WORKER_TOKEN", token)
	t.Setenv("STROEM__FROM_OS_UNKNOWN", "1")
	c, err := config.Load(config.LoadOptions{Path: filepath.Join(t.TempDir(), "worker-config.yaml")})
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	if c.ServerURL != "http://from-os-env:8080" {
		t.Errorf("ServerURL = %q, want the env value without its trailing /", c.ServerURL)
	}
	if !strings.Contains(strings.Join(c.Warnings, "\n"), "STROEM__FROM_OS_UNKNOWN: unknown variable") {
		t.Errorf("Warnings = %q, want one for STROEM__FROM_OS_UNKNOWN", c.Warnings)
	}
}
