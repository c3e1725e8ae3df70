package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the house plan: cmd wires supervisor and
// oneshot, which stand side by side over shared/* and never import each
// other (the supervisor reaches its children through shared/handoff and
// shared/delivery); shared packages import none of them.
func TestDependencyDirection(t *testing.T) {
	t.Parallel()
	const mod = "github.com/stroem-worker/stroem-worker/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, deps := strings.TrimPrefix(fields[0], mod), fields[1:]
		var forbidden []string
		switch {
		case strings.HasPrefix(pkg, "shared/"):
			forbidden = []string{"oneshot", "supervisor", "cmd/"}
		case pkg == "oneshot":
			forbidden = []string{"supervisor", "cmd/"}
		case pkg == "supervisor":
			forbidden = []string{"oneshot", "cmd/"}
		default:
			continue
		}
		checked++
		for _, d := range deps {
			for _, f := range forbidden {
				if strings.HasPrefix(strings.TrimPrefix(d, mod), f) && strings.HasPrefix(d, mod) {
					t.Errorf("%s depends on %s", pkg, d)
				}
			}
		}
	}
	if checked < 8 {
		t.Errorf("checked %d packages, want all of oneshot, supervisor and shared/*", checked)
	}
}
