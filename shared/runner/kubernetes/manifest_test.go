package kube_test

import (
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestManifestOverrideAccepted: the overrides are merged by the reference
// worker's rules (objects by key, named lists by name, the rest
// replaced) and the API server accepts the result.
func TestManifestOverrideAccepted(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	ctx := ctxT(t)
	job := e.script("s", map[string]any{"script": "true", "manifest": map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{"team": "a"}, "labels": map[string]any{"stroem.io/step": "not-this"}},
		"spec": map[string]any{
			"serviceAccountName": "deployer",
			"nodeSelector":       map[string]any{"pool": "build"},
			"tolerations":        []any{map[string]any{"key": "build", "operator": "Exists"}},
			"containers": []any{map[string]any{"name": "step", "resources": map[string]any{"limits": map[string]any{"memory": "1Gi"}},
				"env": []any{map[string]any{"name": "EXTRA", "value": "1"}}}},
		},
	}}, 0)
	done := e.start(ctx)
	p := e.waitPod(ctx, job)
	step := containerByName(p.Spec.Containers, "step")
	tolerated := false
	for _, tol := range p.Spec.Tolerations {
		tolerated = tolerated || tol.Key == "build"
	}
	if p.Spec.ServiceAccountName != "deployer" || p.Spec.NodeSelector["pool"] != "build" || !tolerated {
		t.Errorf("spec not merged: sa %q selector %v tolerations %v", p.Spec.ServiceAccountName, p.Spec.NodeSelector, p.Spec.Tolerations)
	}
	if q := step.Resources.Limits[corev1.ResourceMemory]; q.String() != "1Gi" || step.Image != "runner:test" || len(step.Command) != 3 {
		t.Errorf("step container not merged by name: %+v", step)
	}
	var extra, stepName bool
	for _, ev := range step.Env {
		extra = extra || ev.Name == "EXTRA"
		stepName = stepName || ev.Name == "STROEM_STEP_NAME"
	}
	if !extra || !stepName {
		t.Errorf("env not merged by name: %+v", step.Env)
	}
	if p.Annotations["team"] != "a" || p.Labels["stroem.io/step"] != "s" || len(p.Spec.InitContainers) != 1 {
		t.Errorf("metadata: annotations %v labels %v (the runner's own labels stay)", p.Annotations, p.Labels)
	}
	e.waitRunning(ctx, p)
	e.terminate(ctx, p.Name, 0)
	if out := e.wait(ctx, done); !out.Succeeded() {
		t.Errorf("outcome %+v", out)
	}
}

// TestManifestOverrideRejected: each refusal of contract §3.3, worded as
// the reference worker words it, and no pod or Secret is created.
func TestManifestOverrideRejected(t *testing.T) {
	t.Parallel()
	e := newKEnv(t, kubetest.KubeletOptions{AutoBind: true})
	const pre = "Failed to execute step: Failed to build pod spec: Pod manifest override validation failed: Pod manifest override rejected: "
	tests := []struct {
		name     string
		manifest any
		want     string
	}{
		{"hostNetwork", map[string]any{"spec": map[string]any{"hostNetwork": true}}, pre + "hostNetwork is not allowed"},
		{"hostPID", map[string]any{"spec": map[string]any{"hostPID": true}}, pre + "hostPID is not allowed"},
		{"hostIPC", map[string]any{"spec": map[string]any{"hostIPC": true}}, pre + "hostIPC is not allowed"},
		{"hostPath", map[string]any{"spec": map[string]any{"volumes": []any{map[string]any{"name": "h", "hostPath": map[string]any{"path": "/"}}}}},
			pre + "hostPath volumes are not allowed"},
		{"privileged", map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "step", "securityContext": map[string]any{"privileged": true}}}}},
			pre + "privileged containers are not allowed (containers)"},
		{"privileged init", map[string]any{"spec": map[string]any{"initContainers": []any{map[string]any{"name": "x", "securityContext": map[string]any{"privileged": true}}}}},
			pre + "privileged containers are not allowed (initContainers)"},
		{"escalation", map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "step", "securityContext": map[string]any{"allowPrivilegeEscalation": true}}}}},
			pre + "allowPrivilegeEscalation is not allowed (containers)"},
		{"escalation init", map[string]any{"spec": map[string]any{"initContainers": []any{map[string]any{"name": "x", "securityContext": map[string]any{"allowPrivilegeEscalation": true}}}}},
			pre + "allowPrivilegeEscalation is not allowed (initContainers)"},
		{"docker socket", map[string]any{"spec": map[string]any{"containers": []any{map[string]any{"name": "step", "volumeMounts": []any{map[string]any{"name": "d", "mountPath": "/var/run/docker.sock"}}}}}},
			pre + "mounting /var/run/docker.sock is not allowed (containers)"},
		{"docker socket init", map[string]any{"spec": map[string]any{"initContainers": []any{map[string]any{"name": "x", "volumeMounts": []any{map[string]any{"name": "d", "mountPath": "/var/run/docker.sock"}}}}}},
			pre + "mounting /var/run/docker.sock is not allowed (initContainers)"},
		{"invalid field type", map[string]any{"spec": map[string]any{"containers": "step"}},
			"Failed to execute step: Failed to build pod spec (manifest overrides may contain invalid fields): json: cannot unmarshal string into Go struct field PodSpec.spec.containers of type []v1.Container"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			job := e.script("s", map[string]any{"script": "true", "manifest": tt.manifest}, 0)
			out := e.wait(ctx, e.start(ctx))
			st := e.step(job, "s")
			if out.ExitCode != -1 || st.Error != tt.want {
				t.Errorf("exit %d error %q, want -1 and %q", out.ExitCode, st.Error, tt.want)
			}
		})
	}
	ctx := ctxT(t)
	pods, err := e.s.Client().CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("pods after refused overrides: %v, %v; want none", pods, err)
	}
	secrets, err := e.s.Client().CoreV1().Secrets(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(secrets.Items) != 0 {
		t.Errorf("secrets after refused overrides: %d, %v; want none", len(secrets.Items), err)
	}
}
