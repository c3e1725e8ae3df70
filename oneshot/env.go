package oneshot

import (
	"maps"
	"slices"
	"strings"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/process"
)

// secretEnv names the worker's own variables that must never reach a step
// (the reference worker leaks STROEM__WORKER_TOKEN this way, contract §2.3).
var secretEnv = map[string]bool{
	"STROEM__WORKER_TOKEN":      true,
	"STROEM__WORKER_TOKEN_FILE": true,
}

// withoutSecrets is the worker's environment minus its secrets: the named
// ones, and any variable whose value is the token, whatever its name.
func withoutSecrets(environ []string, token string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || secretEnv[k] || (token != "" && v == token) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// stepEnv builds a step's environment: base (what its runner builds on),
// then the action's env, then the STROEM_* step variables, then the
// variables naming its directories, later entries overriding earlier ones.
func stepEnv(base []string, spec *api.ActionSpec, step *api.Step, dirVars map[string]string) []string {
	keys := []string{}
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	for _, kv := range base {
		if k, v, ok := strings.Cut(kv, "="); ok {
			set(k, v)
		}
	}
	for _, k := range spec.EnvKeys {
		set(k, spec.Env[k])
	}
	set("STROEM_JOB_ID", step.JobID)
	set("STROEM_TASK_NAME", step.TaskName)
	set("STROEM_STEP_NAME", step.StepName)
	set("STROEM_WORKSPACE", step.Workspace)
	for _, k := range slices.Sorted(maps.Keys(dirVars)) {
		set(k, dirVars[k])
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vals[k])
	}
	return out
}

// pathLookup finds a program in the step's own PATH (vals, interpreters).
func pathLookup(env []string) func(string) (string, error) {
	return func(bin string) (string, error) { return process.LookPath(bin, env) }
}
