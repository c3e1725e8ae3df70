package local

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/process"
)

// command is what to execute for a step: program, arguments, directory,
// plus what must happen first (dependencies) and after (a temporary
// script file to remove).
type command struct {
	Path string
	Args []string
	Dir  string
	// Setup, when set, runs first with `sh -c` (dependency installation).
	Setup string
	// TempFile is removed once the step is over.
	TempFile string
}

// language is how a non-shell language runs (contract §2.3).
type language struct {
	ext        string
	candidates []interpreter
}

type interpreter struct {
	bin     string
	preArgs []string
}

var languages = map[string]language{
	"python":     {".py", []interpreter{{"uv", []string{"run"}}, {"python3", nil}, {"python", nil}}},
	"javascript": {".js", []interpreter{{"bun", []string{"run"}}, {"node", nil}}},
	"typescript": {".ts", []interpreter{{"bun", []string{"run"}}, {"deno", []string{"run"}}}},
	"go":         {".go", []interpreter{{"go", []string{"run"}}}},
}

func canonicalLanguage(l string) string {
	switch strings.ToLower(l) {
	case "python", "py":
		return "python"
	case "javascript", "js":
		return "javascript"
	case "typescript", "ts":
		return "typescript"
	case "go", "golang":
		return "go"
	}
	// Unknown languages run as shell, as the server's own worker does.
	return "shell"
}

// buildCommand turns a claimed script step into a command (contract
// §2.3). workDir is where the step runs and where relative sources
// resolve. lookPath finds interpreters (exec.LookPath with the step's PATH).
func buildCommand(step *api.Step, spec *api.ActionSpec, workDir string, lookPath func(string) (string, error)) (command, error) {
	if step.ActionType != "script" || (step.Runner != "" && step.Runner != "local") {
		return command{}, fmt.Errorf("Failed to select runner: Unknown action type / runner combination: %s/%s", step.ActionType, step.Runner)
	}
	if !spec.HasScript && !spec.HasSource {
		if spec.HasCmd {
			return command{}, fmt.Errorf("Failed to build run config: 'cmd' is no longer valid for script actions, use 'script' or 'source' instead")
		}
		return command{}, fmt.Errorf("Failed to build run config: Action spec must contain 'script' or 'source'")
	}
	lang := canonicalLanguage(spec.Language)
	if lang == "shell" {
		if spec.HasScript {
			args := []string{"-c", spec.Script}
			if len(spec.Args) > 0 {
				// "sh" becomes $0 so that the action's args are $1..$n.
				args = append(args, "sh")
				args = append(args, spec.Args...)
			}
			return command{Path: "sh", Args: args, Dir: workDir}, nil
		}
		return command{Path: resolveSource(step.ActionName, spec.Source, workDir), Args: spec.Args, Dir: workDir}, nil
	}

	l := languages[lang]
	var in interpreter
	if spec.Interpreter != "" {
		in = interpreter{bin: spec.Interpreter}
	} else {
		var tried []string
		for _, cand := range l.candidates {
			if _, err := lookPath(cand.bin); err == nil {
				in = cand
				break
			}
			tried = append(tried, cand.bin)
		}
		if in.bin == "" {
			return command{}, fmt.Errorf("Failed to build run config: No interpreter found for language '%s'. Tried: %s", lang, strings.Join(tried, ", "))
		}
	}
	cmd := command{Path: in.bin, Dir: workDir}
	cmd.Args = append(cmd.Args, in.preArgs...)
	if in.bin == "uv" {
		for _, d := range spec.Dependencies {
			cmd.Args = append(cmd.Args, "--with", d)
		}
	} else if len(spec.Dependencies) > 0 {
		cmd.Setup = dependencyCommand(lang, in.bin, spec.Dependencies)
	}
	script := ""
	if spec.HasScript {
		script = filepath.Join(workDir, "_stroem_script_"+uuid.NewString()+l.ext)
		if err := os.WriteFile(script, []byte(spec.Script), 0o700); err != nil {
			return command{}, fmt.Errorf("Failed to build run config: writing script file: %w", err)
		}
		cmd.TempFile = script
	} else {
		script = resolveSource(step.ActionName, spec.Source, workDir)
	}
	cmd.Args = append(cmd.Args, script)
	cmd.Args = append(cmd.Args, spec.Args...)
	return cmd, nil
}

// dependencyCommand is the install command run before the step when the
// interpreter cannot take dependencies itself (uv can).
func dependencyCommand(lang, bin string, deps []string) string {
	quoted := make([]string, len(deps))
	for i, d := range deps {
		quoted[i] = "'" + strings.ReplaceAll(d, "'", `'\''`) + "'"
	}
	list := strings.Join(quoted, " ")
	switch {
	case lang == "python":
		return bin + " -m pip install -q " + list
	case bin == "bun":
		return "bun install " + list
	case bin == "node":
		return "npm install --no-save " + list
	}
	return "" // go and deno fetch dependencies themselves
}

// resolveSource resolves a source path: absolute kept; relative joined to
// the workspace, or to _libraries/<lib> for a library action "lib.action".
func resolveSource(actionName, source, workDir string) string {
	if filepath.IsAbs(source) {
		return source
	}
	if lib, _, ok := strings.Cut(actionName, "."); ok && lib != "" {
		return filepath.Join(workDir, "_libraries", lib, source)
	}
	return filepath.Join(workDir, source)
}

// pathLookup returns a LookPath that searches the step's own PATH.
func pathLookup(env []string) func(string) (string, error) {
	return func(bin string) (string, error) { return process.LookPath(bin, env) }
}
