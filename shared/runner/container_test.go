package runner

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/api"
)

// ids returns a newID that counts: id1, id2, ... (each script's two ids
// are then known, so whole scripts can be compared).
func ids() func() string {
	n := 0
	return func() string { n++; return fmt.Sprintf("0000000%d-0000-0000-0000-000000000000", n) }
}

func spec(t *testing.T, raw string) *api.ActionSpec {
	t.Helper()
	s, err := api.ParseActionSpec(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	file1  = "/tmp/_stroem_script_00000001-0000-0000-0000-000000000000"
	delim2 = "STROEM_EOF_00000002000000000000000000000000"
)

func heredoc(ext, content string) string {
	return "cat > " + file1 + ext + " << '" + delim2 + "'\n" + content + "\n" + delim2 + "\nchmod +x " + file1 + ext + "\n"
}

// TestContainerCommandExact compares whole argvs with those the reference
// worker builds (script_exec.rs, docker.rs build_container_config).
func TestContainerCommandExact(t *testing.T) {
	t.Parallel()
	pyChain := func(file string, suffix string) string {
		return "if command -v uv >/dev/null 2>&1; then\n  uv run " + file + suffix + "\n" +
			"elif command -v python3 >/dev/null 2>&1; then\n  python3 " + file + suffix + "\n" +
			"elif command -v python >/dev/null 2>&1; then\n  python " + file + suffix + "\n" +
			"else\n  echo \"Error: no interpreter found for 'python'. Tried: uv, python3, python\" >&2\n  exit 127\nfi"
	}
	tests := []struct {
		name, action, typ, spec string
		wantEntry, wantCmd      []string
	}{
		{"inline shell", "a", "script", `{"script":"echo hello"}`, []string{"sh", "-c", "echo hello"}, nil},
		{"inline shell args", "a", "script", `{"script":"echo $1 $2","args":["--env","production"]}`,
			[]string{"sh", "-c", "echo $1 $2", "sh", "--env", "production"}, nil},
		{"source", "a", "script", `{"source":"deploy.sh"}`, []string{"sh", "-c", "/workspace/deploy.sh"}, nil},
		{"source args", "a", "script", `{"source":"run.sh","args":["arg1","arg 2"]}`,
			[]string{"sh", "-c", "/workspace/run.sh", "sh", "arg1", "arg 2"}, nil},
		{"library source", "lib.act", "script", `{"source":"run.sh"}`, []string{"sh", "-c", "/workspace/_libraries/lib/run.sh"}, nil},
		{"absolute source", "a", "script", `{"source":"/opt/x.sh"}`, []string{"sh", "-c", "/opt/x.sh"}, nil},
		{"script wins over source", "a", "script", `{"script":"true","source":"x.sh"}`, []string{"sh", "-c", "true"}, nil},
		{"python source", "a", "script", `{"source":"actions/hello.py","language":"python"}`,
			[]string{"sh", "-c", pyChain("'/workspace/actions/hello.py'", "")}, nil},
		{"python source args", "a", "script", `{"source":"train.py","language":"python","args":["--epochs","10"]}`,
			[]string{"sh", "-c", pyChain("'/workspace/train.py'", " '--epochs' '10'")}, nil},
		{"python inline", "a", "script", `{"script":"print('hello')","language":"python"}`,
			[]string{"sh", "-c", heredoc(".py", "print('hello')") + pyChain(file1+".py", "")}, nil},
		{"python inline deps", "a", "script", `{"script":"import requests","language":"python","dependencies":["requests"]}`,
			[]string{"sh", "-c", heredoc(".py", "import requests") +
				"if command -v uv >/dev/null 2>&1; then\n  uv run --with 'requests' " + file1 + ".py\n" +
				"elif command -v python3 >/dev/null 2>&1; then\n  python3 -m pip install -q 'requests'\n  python3 " + file1 + ".py\n" +
				"elif command -v python >/dev/null 2>&1; then\n  python -m pip install -q 'requests'\n  python " + file1 + ".py\n" +
				"else\n  echo \"Error: no interpreter found for 'python'. Tried: uv, python3, python\" >&2\n  exit 127\nfi"}, nil},
		{"interpreter override", "a", "script", `{"script":"print('hello')","language":"python","interpreter":"python3.12"}`,
			[]string{"sh", "-c", heredoc(".py", "print('hello')") + "python3.12 " + file1 + ".py"}, nil},
		{"uv override deps", "a", "script", `{"source":"run.py","language":"python","interpreter":"uv","dependencies":["httpx"]}`,
			[]string{"sh", "-c", "uv run --with 'httpx' '/workspace/run.py'"}, nil},
		{"uv override no deps", "a", "script", `{"source":"run.py","language":"python","interpreter":"uv"}`,
			[]string{"sh", "-c", "uv run '/workspace/run.py'"}, nil},
		{"node override deps", "a", "script", `{"source":"i.js","language":"js","interpreter":"node","dependencies":["lodash"]}`,
			[]string{"sh", "-c", "npm install --no-save 'lodash'\nnode '/workspace/i.js'"}, nil},
		{"go source", "a", "script", `{"source":"main.go","language":"go","args":["--flag"]}`,
			[]string{"sh", "-c", "if command -v go >/dev/null 2>&1; then\n  go run '/workspace/main.go' '--flag'\n" +
				"else\n  echo \"Error: no interpreter found for 'go'. Tried: go\" >&2\n  exit 127\nfi"}, nil},
		{"shell interpreter", "a", "script", `{"script":"echo hello","interpreter":"bash"}`,
			[]string{"sh", "-c", heredoc(".sh", "echo hello") + "bash " + file1 + ".sh"}, nil},
		{"unknown language is shell", "a", "script", `{"script":"true","language":"cobol"}`, []string{"sh", "-c", "true"}, nil},

		// Container actions.
		{"docker cmd", "a", "docker", `{"cmd":"echo hi"}`, nil, []string{"sh", "-c", "echo hi"}},
		{"docker image defaults", "a", "docker", `{}`, nil, nil},
		{"docker entrypoint and command", "a", "docker", `{"entrypoint":["/app/run"],"command":["--verbose",3,"x"]}`,
			[]string{"/app/run"}, []string{"--verbose", "x"}},
		{"docker command wins over cmd", "a", "docker", `{"command":["a"],"cmd":"b"}`, nil, []string{"a"}},
		{"docker entrypoint and cmd", "a", "docker", `{"entrypoint":["/app/run"],"cmd":"--verbose --env staging"}`,
			[]string{"/app/run"}, []string{"sh", "-c", "--verbose --env staging"}},
		{"docker empty entrypoint", "a", "docker", `{"entrypoint":[]}`, []string{}, nil},
		{"docker ignores script", "a", "docker", `{"script":"x","cmd":"y"}`, nil, []string{"sh", "-c", "y"}},
		{"pod cmd", "a", "pod", `{"cmd":"echo hi"}`, nil, []string{"sh", "-c", "echo hi"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			step := &api.Step{ActionName: tt.action, ActionType: tt.typ, Runner: "docker"}
			entry, cmd, err := containerCommand(step, spec(t, tt.spec), ids())
			if err != nil {
				t.Fatalf("containerCommand() = %v", err)
			}
			if diff := cmp.Diff(tt.wantEntry, entry); diff != "" {
				t.Errorf("entrypoint (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCmd, cmd); diff != "" {
				t.Errorf("cmd (-want +got):\n%s", diff)
			}
			if (tt.wantEntry == nil) != (entry == nil) {
				t.Errorf("entrypoint nil = %v, want %v (nil keeps the image's)", entry == nil, tt.wantEntry == nil)
			}
		})
	}
}

// TestContainerCommandReferenceTable ports the reference worker's
// script_exec.rs tests that check parts of a script.
func TestContainerCommandReferenceTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, spec  string
		has, hasNot []string
	}{
		{"python chain", `{"script":"print('hello')","language":"python"}`, []string{"STROEM_EOF_", "print('hello')", "command -v uv", "command -v python3"}, nil},
		{"dep escaped", `{"script":"import pkg","language":"python","dependencies":["pkg'evil"]}`, []string{`'pkg'\''evil'`}, nil},
		{"js chain", `{"script":"console.log('hi')","language":"javascript"}`, []string{"command -v bun", "command -v node", "/tmp/_stroem_script_", ".js"}, nil},
		{"go run", `{"script":"package main\nfunc main() {}","language":"go"}`, []string{"/tmp/_stroem_script_", ".go", "go run"}, nil},
		{"python file no heredoc", `{"source":"actions/hello.py","language":"python"}`, []string{"uv run '/workspace/actions/hello.py'"}, []string{"STROEM_EOF"}},
		{"python file deps", `{"source":"actions/fetch.py","language":"python","dependencies":["requests"]}`, []string{"--with 'requests'", "'/workspace/actions/fetch.py'"}, []string{"STROEM_EOF"}},
		{"python file override", `{"source":"actions/hello.py","language":"python","interpreter":"python3.12"}`, []string{"python3.12 '/workspace/actions/hello.py'"}, []string{"STROEM_EOF"}},
		{"ts file", `{"source":"actions/task.ts","language":"typescript"}`, []string{"command -v bun", "command -v deno", "'/workspace/actions/task.ts'"}, nil},
		{"ts inline bun deps", `{"script":"x","language":"ts","dependencies":["ts-node"]}`, []string{"bun install 'ts-node'", ".ts"}, nil},
		{"shell deps heredoc", `{"script":"echo hello","dependencies":["bash-dep"]}`, []string{"STROEM_EOF_"}, nil},
		{"uv override deps inline", `{"script":"import httpx","language":"python","interpreter":"uv","dependencies":["httpx","certifi"]}`, []string{"uv run --with 'httpx' --with 'certifi'"}, []string{"pip install"}},
		{"args special chars", `{"script":"x","language":"python","args":["$HOME","a;b","` + "`id`" + `"]}`, []string{"'$HOME'", "'a;b'", "'`id`'"}, nil},
		{"args quote", `{"script":"x","language":"python","args":["it's"]}`, []string{`'it'\''s'`}, nil},
		{"file args quote", `{"source":"a.py","language":"python","args":["it's"]}`, []string{`'it'\''s'`}, nil},
		{"path escaped", `{"source":"my dir/it's.py","language":"python"}`, []string{`'/workspace/my dir/it'\''s.py'`}, nil},
		{"py deps and args", `{"script":"x","language":"python","dependencies":["pandas"],"args":["--output","result.json"]}`, []string{"--with 'pandas'", "'--output'", "'result.json'"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			entry, _, err := ContainerCommand(&api.Step{ActionName: "a", ActionType: "script"}, spec(t, tt.spec))
			if err != nil {
				t.Fatal(err)
			}
			if len(entry) != 3 || entry[0] != "sh" || entry[1] != "-c" {
				t.Fatalf("entrypoint = %q, want [sh -c <script>]", entry)
			}
			for _, h := range tt.has {
				if !strings.Contains(entry[2], h) {
					t.Errorf("script lacks %q:\n%s", h, entry[2])
				}
			}
			for _, h := range tt.hasNot {
				if strings.Contains(entry[2], h) {
					t.Errorf("script has %q:\n%s", h, entry[2])
				}
			}
		})
	}
}

func TestContainerCommandUniqueHeredoc(t *testing.T) {
	t.Parallel()
	s := spec(t, `{"script":"print(1)","language":"python"}`)
	a, _, _ := ContainerCommand(&api.Step{ActionType: "script"}, s)
	b, _, _ := ContainerCommand(&api.Step{ActionType: "script"}, s)
	if a[2] == b[2] {
		t.Errorf("two inline scripts got the same file and delimiter:\n%s", a[2])
	}
}

func TestContainerCommandErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ spec, want string }{
		{`{"cmd":"echo"}`, "Failed to build run config: Action spec has 'cmd' but type is 'script' — 'cmd' is no longer valid for script actions, use 'script' or 'source' instead"},
		{`{}`, "Failed to build run config: Action spec must contain 'script' or 'source'"},
	} {
		_, _, err := ContainerCommand(&api.Step{ActionType: "script"}, spec(t, tt.spec))
		if err == nil || err.Error() != tt.want {
			t.Errorf("ContainerCommand(%s) = %v, want %q", tt.spec, err, tt.want)
		}
	}
}

func TestContainerImage(t *testing.T) {
	t.Parallel()
	const def = "ghcr.io/fremvaerk/stroem-runner:latest"
	tests := []struct {
		typ, actionImage, runnerImage, want string
	}{
		{"script", "", "", def},
		{"script", "", "my/runner:1", "my/runner:1"},
		{"script", "act:1", "my/runner:1", "my/runner:1"},
		{"script", "act:1", "", "act:1"},
		{"docker", "alpine:3", "my/runner:1", "alpine:3"},
		{"docker", "", "my/runner:1", def},
	}
	for _, tt := range tests {
		got := ContainerImage(&api.Step{ActionType: tt.typ, ActionImage: tt.actionImage}, tt.runnerImage, def)
		if got != tt.want {
			t.Errorf("ContainerImage(%s, %q, %q) = %q, want %q", tt.typ, tt.actionImage, tt.runnerImage, got, tt.want)
		}
	}
}

func TestContainerWorkdirAndVars(t *testing.T) {
	t.Parallel()
	script, docker := &api.Step{ActionType: "script"}, &api.Step{ActionType: "docker"}
	for _, tt := range []struct {
		step    *api.Step
		workdir string
		want    string
	}{
		{script, "", "/workspace"},
		{script, "sub/dir", "/workspace/sub/dir"},
		{script, "/abs/", "/abs"},
		{docker, "", ""},
		{docker, "/src", "/src"},
		{docker, "rel", "/rel"},
	} {
		if got := ContainerWorkdir(tt.step, &api.ActionSpec{Workdir: tt.workdir}); got != tt.want {
			t.Errorf("ContainerWorkdir(%s, %q) = %q, want %q", tt.step.ActionType, tt.workdir, got, tt.want)
		}
	}
	if diff := cmp.Diff(map[string]string{"ARTIFACTS_DIR": "/artifacts", "STATE_DIR": "/state", "STATE_OUT_DIR": "/state-out",
		"GLOBAL_STATE_DIR": "/global-state", "GLOBAL_STATE_OUT_DIR": "/global-state-out"}, ContainerDirVars(script)); diff != "" {
		t.Errorf("ContainerDirVars(script) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"ARTIFACTS_DIR": "/artifacts"}, ContainerDirVars(docker)); diff != "" {
		t.Errorf("ContainerDirVars(docker) (-want +got):\n%s", diff)
	}
}

func TestStartupPreamble(t *testing.T) {
	t.Parallel()
	const pre = `for s in /etc/stroem/startup.d/*.sh; do [ -f "$s" ] && . "$s"; done; `
	tests := []struct{ in, want []string }{
		{[]string{"sh", "-c", "echo hello"}, []string{"sh", "-c", pre + "echo hello"}},
		{[]string{"bash", "-c", "x", "sh", "a"}, []string{"bash", "-c", pre + "x", "sh", "a"}},
		{[]string{"python3", "script.py"}, []string{"sh", "-c", pre + "exec python3 script.py"}},
		{[]string{"/app/run", "it's", "a b", ""}, []string{"sh", "-c", pre + `exec /app/run 'it'\''s' 'a b' ''`}},
		{nil, nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, StartupPreamble(tt.in, StartupDir)); diff != "" {
			t.Errorf("StartupPreamble(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestLabelValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"build":                        "build",
		"process[0]":                   "process-0",
		"My Step / Deploy":             "my-step-deploy",
		"--x--":                        "x",
		"ünïcode":                      "n-code",
		strings.Repeat("a", 70):        strings.Repeat("a", 63),
		strings.Repeat("a", 62) + "-b": strings.Repeat("a", 62),
	} {
		if got := LabelValue(in); got != want {
			t.Errorf("LabelValue(%q) = %q, want %q", in, got, want)
		}
	}
}
