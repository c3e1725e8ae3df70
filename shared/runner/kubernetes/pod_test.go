package kube

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/runner"
)

func job(t *testing.T, step *api.Step, spec string) *runner.Job {
	t.Helper()
	s, err := api.ParseActionSpec(json.RawMessage(spec))
	if err != nil {
		t.Fatal(err)
	}
	return &runner.Job{Step: step, Spec: s, Key: "k_" + step.StepName, Attempt: "a1", WorkerID: "w"}
}

func TestPodNameUniqueAndValid(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("very-long-step-name-", 10)
	seen := map[string]bool{}
	for _, j := range []*runner.Job{
		{Step: &api.Step{JobID: "5b73ff1e-2bfe", TaskName: "T", StepName: "process[0]"}, Key: "k1", Attempt: "a"},
		{Step: &api.Step{JobID: "5b73ff1e-2bfe", TaskName: "T", StepName: "process[0]"}, Key: "k2", Attempt: "b"},
		{Step: &api.Step{JobID: "5b73ff1e-2bfe", TaskName: "T", StepName: long + "a"}, Key: "k3", Attempt: "a"},
		{Step: &api.Step{JobID: "5b73ff1e-2bfe", TaskName: "T", StepName: long + "b"}, Key: "k4", Attempt: "a"},
		{Step: &api.Step{JobID: "5b73ff1e-2bfe", StepName: "ünïcode / step"}, Key: "k5", Attempt: "a"},
	} {
		n := podName(j)
		if len(n) > 63 || runner.LabelValue(n) != n || !strings.HasPrefix(n, "stroem-5b73ff1e-") {
			t.Errorf("podName(%q) = %q: not a valid, prefixed name", j.Step.StepName, n)
		}
		if seen[n] {
			t.Errorf("podName(%q) = %q twice", j.Step.StepName, n)
		}
		seen[n] = true
	}
}

// TestContainerActionCommand: a pod action's entrypoint becomes the
// container's command and its command (or sh -c cmd) the args, as on the
// Docker runner, so both run the same argv.
func TestContainerActionCommand(t *testing.T) {
	t.Parallel()
	r := &Runner{}
	tests := []struct {
		spec            string
		command, args   []string
		workdir, memory string
	}{
		{`{"entrypoint":["/app/run"],"command":["--verbose"]}`, []string{"/app/run"}, []string{"--verbose"}, "", ""},
		{`{"cmd":"echo hi"}`, nil, []string{"sh", "-c", "echo hi"}, "", ""},
		{`{"workdir":"src","resources":{"memory":"512Mi"}}`, nil, nil, "/src", "512Mi"},
	}
	for _, tt := range tests {
		j := job(t, &api.Step{JobID: "j", StepName: "s", ActionType: "pod", ActionImage: "img"}, tt.spec)
		p, err := r.buildPod(podInput{job: j, name: "n", namespace: "ns", image: "img"})
		if err != nil {
			t.Fatal(err)
		}
		c := p.Spec.Containers[0]
		if !cmp.Equal(c.Command, tt.command) || !cmp.Equal(c.Args, tt.args) || c.WorkingDir != tt.workdir {
			t.Errorf("%s: command %q args %q workdir %q, want %q %q %q", tt.spec, c.Command, c.Args, c.WorkingDir, tt.command, tt.args, tt.workdir)
		}
		if q := c.Resources.Requests.Memory(); tt.memory != "" && q.String() != tt.memory {
			t.Errorf("%s: memory request %s, want %s", tt.spec, q, tt.memory)
		}
	}
	j := job(t, &api.Step{JobID: "j", StepName: "s", ActionType: "pod"}, `{"resources":{"cpu":"lots"}}`)
	if _, err := r.buildPod(podInput{job: j, name: "n"}); err == nil || err.Error() != `Failed to build run config: resources.cpu: "lots" is not a Kubernetes quantity (e.g. 500m, 2, 512Mi)` {
		t.Errorf("bad cpu: %v", err)
	}
}

// TestStartupConfigMap: a script step's pod mounts the ConfigMap and its
// command sources the scripts first (contract §3.3); pod actions do not.
func TestStartupConfigMap(t *testing.T) {
	t.Parallel()
	r := &Runner{}
	j := job(t, &api.Step{JobID: "j", StepName: "s", ActionType: "script"}, `{"script":"echo hi"}`)
	p, err := r.buildPod(podInput{job: j, name: "n", startupConfigMap: "startup"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"sh", "-c", `for s in /etc/stroem/startup.d/*.sh; do [ -f "$s" ] && . "$s"; done; echo hi`}
	if diff := cmp.Diff(want, p.Spec.Containers[0].Command); diff != "" {
		t.Errorf("command (-want +got):\n%s", diff)
	}
	found := false
	for _, v := range p.Spec.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == "startup" && *v.ConfigMap.DefaultMode == 0o755 {
			found = true
		}
	}
	if !found {
		t.Errorf("no startup-scripts volume: %+v", p.Spec.Volumes)
	}
	j = job(t, &api.Step{JobID: "j", StepName: "s", ActionType: "pod"}, `{"cmd":"true"}`)
	p, err = r.buildPod(podInput{job: j, name: "n", startupConfigMap: "startup"})
	if err != nil || len(p.Spec.Volumes) != 0 {
		t.Errorf("pod action with a startup ConfigMap: volumes %+v, %v; want none", p.Spec.Volumes, err)
	}
}

// TestMergeJSON: the reference worker's merge_json rules.
func TestMergeJSON(t *testing.T) {
	t.Parallel()
	tests := []struct{ base, over, want string }{
		{`{"a":{"b":1,"c":2}}`, `{"a":{"b":3}}`, `{"a":{"b":3,"c":2}}`},
		{`{"l":[{"name":"x","v":1}]}`, `{"l":[{"name":"x","w":2},{"name":"y"}]}`, `{"l":[{"name":"x","v":1,"w":2},{"name":"y"}]}`},
		{`{"l":[1,2]}`, `{"l":[3]}`, `{"l":[3]}`},
		{`{"l":[]}`, `{"l":[{"name":"x"}]}`, `{"l":[{"name":"x"}]}`},
		{`{"a":1}`, `{"a":null}`, `{"a":null}`},
		{`{"a":{"b":1}}`, `{"a":"s"}`, `{"a":"s"}`},
	}
	for _, tt := range tests {
		var b, o, w any
		_ = json.Unmarshal([]byte(tt.base), &b)
		_ = json.Unmarshal([]byte(tt.over), &o)
		_ = json.Unmarshal([]byte(tt.want), &w)
		if diff := cmp.Diff(w, mergeJSON(b, o)); diff != "" {
			t.Errorf("mergeJSON(%s, %s) (-want +got):\n%s", tt.base, tt.over, diff)
		}
	}
}
