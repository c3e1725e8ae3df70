package oneshot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolveRefs(t *testing.T) {
	t.Parallel()
	// A stand-in vals: a real program on a real PATH, answering the JSON
	// protocol (it upper-cases each value after "ref+echo://").
	dir := t.TempDir()
	script := "#!/bin/sh\n[ \"$1 $2 $3 $4 $5\" = 'eval -f - -o json' ] || { echo bad args >&2; exit 2; }\nsed -e 's#ref+echo://\\([a-z0-9-]*\\)#\\1-resolved#g'\n"
	if err := os.WriteFile(filepath.Join(dir, "vals"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	look := pathLookup([]string{"PATH=" + dir + ":" + os.Getenv("PATH")})
	env := []string{"PATH=" + dir + ":/usr/bin:/bin", "A=plain", "B=ref+echo://db-password"}
	got, secrets, err := resolveRefs(context.Background(), env, env, look)
	if err != nil {
		t.Fatalf("resolveRefs() = %v", err)
	}
	if diff := cmp.Diff([]string{env[0], "A=plain", "B=db-password-resolved"}, got); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"db-password-resolved"}, secrets); diff != "" {
		t.Errorf("secrets (-want +got):\n%s", diff)
	}

	// A container step's environment has no PATH of the host's: vals runs
	// with the worker's environment under it.
	bare := []string{"B=ref+echo://token-x"}
	got, _, err = resolveRefs(context.Background(), bare, append([]string{"PATH=" + dir + ":/usr/bin:/bin"}, bare...), look)
	if err != nil {
		t.Fatalf("resolveRefs() without PATH in the step env = %v", err)
	}
	if diff := cmp.Diff([]string{"B=token-x-resolved"}, got); diff != "" {
		t.Errorf("container env (-want +got):\n%s", diff)
	}

	// No ref+ values: vals is not needed.
	if _, _, err := resolveRefs(context.Background(), []string{"A=1"}, nil, func(string) (string, error) { return "", exec.ErrNotFound }); err != nil {
		t.Errorf("resolveRefs() without refs = %v, want nil", err)
	}
	// Missing vals: a clear error.
	_, _, err = resolveRefs(context.Background(), []string{"A=ref+x"}, nil, func(string) (string, error) { return "", exec.ErrNotFound })
	if err == nil || !strings.Contains(err.Error(), "vals binary was not found") {
		t.Errorf("resolveRefs() without vals = %v, want a clear error", err)
	}
}
