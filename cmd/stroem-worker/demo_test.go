package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDemoLabelsRuns: the demo runs one claim-and-run more than it has
// jobs; each run line says which job it ran, and the extra one says it
// found no work, so seven `exit 0` lines do not read as seven jobs.
func TestDemoLabelsRuns(t *testing.T) {
	t.Parallel()
	d := &DemoCmd{worker: buildWorker(t)}
	var out, errOut bytes.Buffer
	if err := d.Run(t.Context(), &Globals{stdout: &out, stderr: &errOut}); err != nil {
		t.Fatalf("demo: %v\n%s", err, errOut.String())
	}
	var runs []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "$ stroem-worker claim-and-run") {
			runs = append(runs, line)
		}
	}
	if len(runs) != len(demoJobs)+1 {
		t.Fatalf("demo printed %d run lines, want %d:\n%s", len(runs), len(demoJobs)+1, out.String())
	}
	for i, j := range demoJobs {
		want := j.TaskName + " / " + j.Steps[0].StepName
		if !strings.HasSuffix(runs[i], want) {
			t.Errorf("run %d = %q, want it to end with %q", i+1, runs[i], want)
		}
	}
	if last := runs[len(runs)-1]; !strings.HasSuffix(last, "(no work left)") || !strings.Contains(last, "exit 0") {
		t.Errorf("last run = %q, want exit 0 labelled (no work left)", last)
	}
	if n := strings.Count(out.String(), "(no work left)"); n != 1 {
		t.Errorf("(no work left) printed %d times, want once", n)
	}
}
