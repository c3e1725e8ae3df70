package runner

import (
	"path"
	"strings"

	"github.com/google/uuid"
	"github.com/stroem-worker/stroem-worker/shared/api"
)

// Where a container step sees its directories (contract §2.2, §3.3): the
// same paths for the Docker and the Kubernetes runner.
const (
	ContainerWorkspace      = "/workspace"
	ContainerArtifacts      = "/artifacts"
	ContainerState          = "/state"
	ContainerStateOut       = "/state-out"
	ContainerGlobalState    = "/global-state"
	ContainerGlobalStateOut = "/global-state-out"
	// StartupDir holds the shell snippets the official runner image's
	// entrypoint sources before the step's code.
	StartupDir = "/etc/stroem/startup.d"
)

// WithWorkspace reports whether a container step runs with the workspace
// (a `type: script` action on a container runner, "WithWorkspace" in the
// contract) rather than as an image's own code (`type: docker`/`pod`).
func WithWorkspace(step *api.Step) bool { return step.ActionType == "script" }

// ContainerImage is the image a container step runs (contract §1.4): for
// a script step runnerImage (the worker's runner_image), else the
// action's image, else the official runner image; for a docker or pod
// action its image, else the official runner image.
func ContainerImage(step *api.Step, runnerImage, defaultImage string) string {
	if WithWorkspace(step) && runnerImage != "" {
		return runnerImage
	}
	if step.ActionImage != "" {
		return step.ActionImage
	}
	return defaultImage
}

// ContainerDirVars are the variables naming a container step's
// directories as it sees them (contract §1.6, with the reference worker's
// bug fixed: the in-container paths, not the worker host's). A container
// action without the workspace gets ARTIFACTS_DIR only, as its state
// directories are not mounted.
func ContainerDirVars(step *api.Step) map[string]string {
	vars := map[string]string{"ARTIFACTS_DIR": ContainerArtifacts}
	if WithWorkspace(step) {
		vars["STATE_DIR"] = ContainerState
		vars["STATE_OUT_DIR"] = ContainerStateOut
		vars["GLOBAL_STATE_DIR"] = ContainerGlobalState
		vars["GLOBAL_STATE_OUT_DIR"] = ContainerGlobalStateOut
	}
	return vars
}

// ContainerWorkdir is a container step's working directory: the action's
// workdir (relative to the workspace for a script step, to / for a
// container action), else /workspace for a script step, else "" (the
// image's own).
func ContainerWorkdir(step *api.Step, spec *api.ActionSpec) string {
	base := "/"
	if WithWorkspace(step) {
		base = ContainerWorkspace
	}
	switch {
	case spec.Workdir != "" && path.IsAbs(spec.Workdir):
		return path.Clean(spec.Workdir)
	case spec.Workdir != "":
		return path.Join(base, spec.Workdir)
	case WithWorkspace(step):
		return ContainerWorkspace
	}
	return ""
}

// ContainerCommand is what a container step executes (contract §1.5):
// the entrypoint (nil: the image's own) and the command (nil: the
// image's own, or none when an entrypoint is set, as the engines treat
// an explicit entrypoint).
//
// A script step's code is passed as argv, nothing is written to the
// workspace: an inline shell script as `sh -c <script> sh <args...>`, a
// `source` file (relative to /workspace, or /workspace/_libraries/<lib>
// for a library action) executed by path, other languages through a
// `command -v` chain over the interpreters the image may have (the
// reference worker's script_exec.rs, byte for byte). Unlike the reference
// worker on Docker, that argv is the entrypoint: an image's ENTRYPOINT
// (the official runner image has `entrypoint.sh bash -c`) would swallow
// it and the step would pass without running.
//
// A container action runs its entrypoint if given, and its command if
// given, else `sh -c <cmd>` if given (after the entrypoint, as the
// reference worker's Docker runner passes it), else the image's own.
func ContainerCommand(step *api.Step, spec *api.ActionSpec) (entrypoint, cmd []string, err error) {
	return containerCommand(step, spec, uuid.NewString)
}

func containerCommand(step *api.Step, spec *api.ActionSpec, newID func() string) (entrypoint, cmd []string, err error) {
	lang := scriptLanguage(spec.Language)
	plain := lang == langShell && len(spec.Dependencies) == 0 && spec.Interpreter == ""
	if !WithWorkspace(step) {
		if spec.Command != nil {
			return spec.Entrypoint, spec.Command, nil
		}
		if spec.HasCmd {
			if plain {
				return spec.Entrypoint, []string{"sh", "-c", spec.Cmd}, nil
			}
			// Languages are refused on container actions by the server's
			// validation; the reference worker still handles them.
			return spec.Entrypoint, inlineScriptCommand(spec.Cmd, lang, spec.Dependencies, spec.Interpreter, nil, newID), nil
		}
		return spec.Entrypoint, nil, nil
	}
	switch {
	case spec.HasScript:
		return inlineScriptCommand(spec.Script, lang, spec.Dependencies, spec.Interpreter, spec.Args, newID), nil, nil
	case spec.HasSource:
		file := containerSource(step.ActionName, spec.Source)
		return fileCommand(file, lang, spec.Dependencies, spec.Interpreter, spec.Args), nil, nil
	case spec.HasCmd:
		return nil, nil, Errorf("Failed to build run config: Action spec has 'cmd' but type is 'script' — 'cmd' is no longer valid for script actions, use 'script' or 'source' instead")
	}
	return nil, nil, Errorf("Failed to build run config: Action spec must contain 'script' or 'source'")
}

// containerSource resolves a source path inside the container: absolute
// kept, relative joined to /workspace or /workspace/_libraries/<lib>.
func containerSource(actionName, source string) string {
	if path.IsAbs(source) {
		return source
	}
	if lib, _, ok := strings.Cut(actionName, "."); ok && lib != "" {
		return path.Join(ContainerWorkspace, "_libraries", lib, source)
	}
	return path.Join(ContainerWorkspace, source)
}

type language int

const (
	langShell language = iota
	langPython
	langJavaScript
	langTypeScript
	langGo
)

// scriptLanguage maps an action's language; unknown ones run as shell,
// as the server's own worker does.
func scriptLanguage(l string) language {
	switch strings.ToLower(l) {
	case "python", "py":
		return langPython
	case "javascript", "js":
		return langJavaScript
	case "typescript", "ts":
		return langTypeScript
	case "go", "golang":
		return langGo
	}
	return langShell
}

func (l language) String() string {
	return [...]string{"shell", "python", "javascript", "typescript", "go"}[l]
}

func (l language) ext() string {
	return [...]string{".sh", ".py", ".js", ".ts", ".go"}[l]
}

type toolchain struct {
	bin string
	pre string // arguments before the script, space-joined
}

// toolchains are the interpreters tried in order (script_exec.rs
// toolchain_preferences).
func (l language) toolchains() []toolchain {
	switch l {
	case langPython:
		return []toolchain{{"uv", "run"}, {"python3", ""}, {"python", ""}}
	case langJavaScript:
		return []toolchain{{"bun", "run"}, {"node", ""}}
	case langTypeScript:
		return []toolchain{{"bun", "run"}, {"deno", "run"}}
	case langGo:
		return []toolchain{{"go", "run"}}
	}
	return []toolchain{{"bash", ""}, {"sh", ""}}
}

// shellQuote single-quotes s for sh, '\” for each quote inside.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func quoteAll(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = shellQuote(s)
	}
	return strings.Join(q, " ")
}

// depInstall is the command installing dependencies before bin runs the
// script ("" when none is needed: uv takes them inline, go and deno fetch
// their own).
func depInstall(l language, bin string, deps []string) string {
	if len(deps) == 0 {
		return ""
	}
	switch {
	case l == langPython && bin == "uv":
		return ""
	case l == langPython:
		return bin + " -m pip install -q " + quoteAll(deps)
	case (l == langJavaScript || l == langTypeScript) && bin == "bun":
		return "bun install " + quoteAll(deps)
	case (l == langJavaScript || l == langTypeScript) && bin == "node":
		return "npm install --no-save " + quoteAll(deps)
	}
	return ""
}

func uvWith(deps []string) string {
	w := make([]string, len(deps))
	for i, d := range deps {
		w[i] = "--with " + shellQuote(d)
	}
	return strings.Join(w, " ")
}

// invocation is the shell text running file (already quoted as needed)
// with interp, dependencies installed first where needed (script_exec.rs,
// the interpreter chain shared by build_container_file_cmd and
// build_container_script_cmd).
func invocation(l language, deps []string, interp, file, argsSuffix string) string {
	var b strings.Builder
	if interp != "" {
		if interp == "uv" && len(deps) > 0 {
			b.WriteString(interp + " run " + uvWith(deps) + " " + file + argsSuffix)
			return b.String()
		}
		if install := depInstall(l, interp, deps); install != "" {
			b.WriteString(install + "\n")
		}
		pre := ""
		for _, tc := range l.toolchains() {
			if tc.bin == interp {
				pre = tc.pre
				break
			}
		}
		if pre == "" {
			b.WriteString(interp + " " + file + argsSuffix)
		} else {
			b.WriteString(interp + " " + pre + " " + file + argsSuffix)
		}
		return b.String()
	}
	var tried []string
	for i, tc := range l.toolchains() {
		tried = append(tried, tc.bin)
		var branch string
		if tc.bin == "uv" && len(deps) > 0 {
			branch = tc.bin + " run " + uvWith(deps) + " " + file + argsSuffix
		} else {
			if install := depInstall(l, tc.bin, deps); install != "" {
				branch = install + "\n  "
			}
			if tc.pre == "" {
				branch += tc.bin + " " + file + argsSuffix
			} else {
				branch += tc.bin + " " + tc.pre + " " + file + argsSuffix
			}
		}
		kw := "elif"
		if i == 0 {
			kw = "if"
		}
		b.WriteString(kw + " command -v " + tc.bin + " >/dev/null 2>&1; then\n  " + branch + "\n")
	}
	b.WriteString("else\n  echo \"Error: no interpreter found for '" + l.String() + "'. Tried: " +
		strings.Join(tried, ", ") + "\" >&2\n  exit 127\nfi")
	return b.String()
}

func argsSuffix(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return " " + quoteAll(args)
}

// inlineScriptCommand runs inline code (script_exec.rs
// build_container_script_cmd): plain shell as `sh -c`, anything else
// written to /tmp through a quoted heredoc and run by its interpreter.
func inlineScriptCommand(content string, l language, deps []string, interp string, args []string, newID func() string) []string {
	if l == langShell && len(deps) == 0 && interp == "" {
		out := []string{"sh", "-c", content}
		if len(args) > 0 {
			// "sh" becomes $0 so that the args are $1..$n.
			out = append(out, "sh")
			out = append(out, args...)
		}
		return out
	}
	// A fresh id in the path keeps concurrent steps apart; another in the
	// delimiter keeps the content from ending the heredoc.
	file := "/tmp/_stroem_script_" + newID() + l.ext()
	delim := "STROEM_EOF_" + strings.ReplaceAll(newID(), "-", "")
	s := "cat > " + file + " << '" + delim + "'\n" + content + "\n" + delim + "\nchmod +x " + file + "\n"
	return []string{"sh", "-c", s + invocation(l, deps, interp, file, argsSuffix(args))}
}

// fileCommand runs a workspace file (script_exec.rs
// build_container_file_cmd): plain shell executes it by path, anything
// else through its interpreter.
func fileCommand(file string, l language, deps []string, interp string, args []string) []string {
	if l == langShell && len(deps) == 0 && interp == "" {
		out := []string{"sh", "-c", file}
		if len(args) > 0 {
			out = append(out, "sh")
			out = append(out, args...)
		}
		return out
	}
	return []string{"sh", "-c", invocation(l, deps, interp, shellQuote(file), argsSuffix(args))}
}

// StartupPreamble makes argv source dir/*.sh first, as the official
// runner image's entrypoint does (and as the reference worker's
// Kubernetes runner rewrites a pod's command, contract §3.3): the script
// of `sh -c S …` or `bash -c S …` gets the loop in front, anything else
// becomes `sh -c '<loop>exec <argv quoted>'`.
func StartupPreamble(argv []string, dir string) []string {
	if len(argv) == 0 {
		return argv
	}
	pre := "for s in " + dir + "/*.sh; do [ -f \"$s\" ] && . \"$s\"; done; "
	if len(argv) >= 3 && (argv[0] == "sh" || argv[0] == "bash") && argv[1] == "-c" {
		out := append([]string{}, argv...)
		out[2] = pre + out[2]
		return out
	}
	parts := make([]string, len(argv))
	for i, a := range argv {
		parts[i] = wordQuote(a)
	}
	return []string{"sh", "-c", pre + "exec " + strings.Join(parts, " ")}
}

// wordQuote leaves harmless words bare and single-quotes the rest
// (kubernetes.rs shell_escape).
func wordQuote(s string) string {
	for _, c := range s {
		if !(c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./=:@", c))) {
			return shellQuote(s)
		}
	}
	if s == "" {
		return "''"
	}
	return s
}

// LabelValue makes s a valid label value for both engines (a Kubernetes
// label value: at most 63 characters of [a-z0-9-], here also lower case,
// starting and ending alphanumeric): lower-cased, every other character
// a '-', runs of '-' collapsed, trimmed. "process[0]" becomes "process-0".
func LabelValue(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			b.WriteRune(c)
		} else if !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], "-")
	}
	return out
}
