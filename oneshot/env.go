package oneshot

import (
	"maps"
	"slices"
	"strings"

	"github.com/stroem-worker/stroem-worker/shared/api"
)

// secretEnv names the worker's own variables that must never reach a step
// (the reference worker leaks STROEM__WORKER_TOKEN this way, contract §2.3).
var secretEnv = map[string]bool{
	"STROEM__WORKER_TOKEN":      true,
	"STROEM__WORKER_TOKEN_FILE": true,
	"STROEM_CLAIMED_STEP_FD":    true,
}

// stepEnv builds a step's environment: the worker's own minus its secrets,
// then the action's env, then the STROEM_* step variables, later entries
// overriding earlier ones. Any variable whose value is the token is
// dropped too, whatever its name.
func stepEnv(base []string, token string, spec *api.ActionSpec, step *api.Step, extra map[string]string) []string {
	keys := []string{}
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			keys = append(keys, k)
		}
		vals[k] = v
	}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || secretEnv[k] || (token != "" && v == token) {
			continue
		}
		set(k, v)
	}
	for _, k := range spec.EnvKeys {
		set(k, spec.Env[k])
	}
	set("STROEM_JOB_ID", step.JobID)
	set("STROEM_TASK_NAME", step.TaskName)
	set("STROEM_STEP_NAME", step.StepName)
	set("STROEM_WORKSPACE", step.Workspace)
	for _, k := range slices.Sorted(maps.Keys(extra)) {
		set(k, extra[k])
	}
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+vals[k])
	}
	return out
}
