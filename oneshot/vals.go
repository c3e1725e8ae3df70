package oneshot

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/process"
)

// valsTimeout bounds one `vals eval` run.
const valsTimeout = 2 * time.Minute

// resolveRefs replaces env values starting with "ref+" by what
// `vals eval -f - -o json` makes of them (contract §14), running vals with
// runEnv. It returns the new environment and the resolved values
// (secrets, to be masked). With no ref+ values, vals is not run at all.
func resolveRefs(ctx context.Context, env, runEnv []string, lookPath func(string) (string, error)) ([]string, []string, error) {
	refs := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(v, "ref+") {
			refs[k] = v
		}
	}
	if len(refs) == 0 {
		return env, nil, nil
	}
	bin, err := lookPath("vals")
	if err != nil {
		return nil, nil, errors.New("Failed to resolve secrets in env vars: the vals binary was not found on PATH (it resolves ref+ values; install github.com/helmfile/vals)")
	}
	in, _ := json.Marshal(refs)
	ctx, cancel := context.WithTimeout(ctx, valsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "eval", "-f", "-", "-o", "json")
	cmd.Env = runEnv
	cmd.Stdin = bytes.NewReader(in)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	// Started through the process registry: the orphan sweep must not
	// reap it from under os/exec.
	err = process.StartCmd(cmd)
	if err == nil {
		err = process.WaitCmd(cmd)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("Failed to resolve secrets in env vars: vals: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var resolved map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &resolved); err != nil {
		return nil, nil, fmt.Errorf("Failed to resolve secrets in env vars: vals did not print a JSON object: %v", err)
	}
	var secrets []string
	outEnv := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if raw, ok := resolved[k]; ok && refs[k] != "" {
			var s string
			if json.Unmarshal(raw, &s) == nil {
				outEnv = append(outEnv, k+"="+s)
				secrets = append(secrets, s)
				continue
			}
		}
		outEnv = append(outEnv, kv)
	}
	return outEnv, secrets, nil
}
