package local

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/api"
)

func TestBuildCommand(t *testing.T) {
	t.Parallel()
	only := func(bins ...string) func(string) (string, error) {
		return func(b string) (string, error) {
			for _, x := range bins {
				if x == b {
					return "/usr/bin/" + b, nil
				}
			}
			return "", exec.ErrNotFound
		}
	}
	tests := []struct {
		name     string
		action   string
		spec     string
		found    []string
		wantPath string
		wantArgs []string
		wantErr  string
	}{
		{"inline", "a", `{"type":"script","script":"echo hi"}`, nil, "sh", []string{"-c", "echo hi"}, ""},
		{"inline args", "a", `{"type":"script","script":"echo $1","args":["x y","z"]}`, nil, "sh", []string{"-c", "echo $1", "sh", "x y", "z"}, ""},
		{"source", "a", `{"type":"script","source":"bin/run.sh","args":["1"]}`, nil, "/ws/bin/run.sh", []string{"1"}, ""},
		{"library source", "lib.act", `{"type":"script","source":"run.sh"}`, nil, "/ws/_libraries/lib/run.sh", nil, ""},
		{"absolute source", "a", `{"type":"script","source":"/opt/x"}`, nil, "/opt/x", nil, ""},
		{"script wins", "a", `{"type":"script","script":"true","source":"x"}`, nil, "sh", []string{"-c", "true"}, ""},
		{"cmd only", "a", `{"type":"script","cmd":"echo"}`, nil, "", nil, "'cmd' is no longer valid"},
		{"neither", "a", `{"type":"script"}`, nil, "", nil, "must contain 'script' or 'source'"},
		{"python source uv", "a", `{"type":"script","language":"python","source":"m.py","dependencies":["requests"]}`, []string{"uv", "python3"}, "uv", []string{"run", "--with", "requests", "/ws/m.py"}, ""},
		{"python3 fallback", "a", `{"type":"script","language":"py","source":"m.py"}`, []string{"python3"}, "python3", []string{"/ws/m.py"}, ""},
		{"interpreter override", "a", `{"type":"script","language":"python","interpreter":"/opt/py","source":"m.py","args":["a"]}`, nil, "/opt/py", []string{"/ws/m.py", "a"}, ""},
		{"no interpreter", "a", `{"type":"script","language":"typescript","source":"m.ts"}`, nil, "", nil, "No interpreter found for language 'typescript'. Tried: bun, deno"},
		{"go", "a", `{"type":"script","language":"go","source":"main.go"}`, []string{"go"}, "go", []string{"run", "/ws/main.go"}, ""},
		{"unknown language is shell", "a", `{"type":"script","language":"cobol","script":"true"}`, nil, "sh", []string{"-c", "true"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec, err := api.ParseActionSpec(json.RawMessage(tt.spec))
			if err != nil {
				t.Fatal(err)
			}
			step := &api.Step{ActionName: tt.action, ActionType: "script", Runner: "local"}
			cmd, err := buildCommand(step, spec, "/ws", only(tt.found...))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("buildCommand() = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("buildCommand() = %v", err)
			}
			if diff := cmp.Diff(tt.wantPath, cmd.Path); diff != "" {
				t.Errorf("path (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantArgs, cmd.Args); diff != "" {
				t.Errorf("args (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBuildCommandInlinePythonWritesScript(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	spec, _ := api.ParseActionSpec(json.RawMessage(`{"type":"script","language":"python","script":"print(1)","dependencies":["x'y"]}`))
	cmd, err := buildCommand(&api.Step{ActionType: "script", Runner: "local"}, spec, dir,
		func(b string) (string, error) {
			if b == "python3" {
				return "/usr/bin/python3", nil
			}
			return "", exec.ErrNotFound
		})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cmd.TempFile)
	if err != nil || string(data) != "print(1)" || !strings.HasSuffix(cmd.TempFile, ".py") {
		t.Errorf("script file %s = %q, %v; want the inline script", cmd.TempFile, data, err)
	}
	if want := `python3 -m pip install -q 'x'\''y'`; cmd.Setup != want {
		t.Errorf("setup = %q, want %q", cmd.Setup, want)
	}
}

func TestUnknownRunner(t *testing.T) {
	t.Parallel()
	spec, _ := api.ParseActionSpec(json.RawMessage(`{"type":"docker"}`))
	_, err := buildCommand(&api.Step{ActionType: "docker", Runner: "none"}, spec, "/ws", nil)
	if err == nil || !strings.Contains(err.Error(), "Unknown action type / runner combination: docker/none") {
		t.Errorf("buildCommand(docker) = %v, want the runner error", err)
	}
}
