package kubetest_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const goodManifest = `---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
---
apiVersion: v1
kind: Pod
metadata:
  name: probe
  labels: {app: stroem-step}
spec:
  restartPolicy: Never
  containers:
    - name: step
      image: busybox:test
      volumeMounts: [{name: token, mountPath: /var/run/secrets/stroem, readOnly: true}]
  volumes:
    - name: token
      secret: {secretName: stroem-worker-token, defaultMode: 0400}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubetest-dry-run-only}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
`

func TestValidateManifests(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	ctx := testContext(t)

	if err := kubetest.ValidateManifests(ctx, s.Config(), ns, []byte(goodManifest)); err != nil {
		t.Errorf("ValidateManifests(good) = %v", err)
	}
	// A dry run stores nothing.
	if _, err := s.Client().CoreV1().Pods(ns).Get(ctx, "probe", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod after dry run: %v, want NotFound", err)
	}

	tests := []struct {
		name    string
		doc     string
		wantDoc int
		want    string
	}{
		{"invalid label", `
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {stroem.io/step: "process[0]"}}
spec: {containers: [{name: step, image: busybox}]}`, 2, `Invalid value: "process[0]"`},
		{"unknown field", `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: step, image: busybox, imagePullPolicyy: Always}]}`, 2, `unknown field "spec.containers[0].imagePullPolicyy"`},
		{"unknown kind", `
apiVersion: stroem.io/v1
kind: Step
metadata: {name: p}`, 2, `finding the resource for stroem.io/v1, Kind=Step`},
		{"missing field", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec: {template: {spec: {containers: [{name: c, image: i}]}}}`, 2, `spec.selector: Required value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A good document first, so the error must name the second.
			manifest := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---" + tt.doc
			err := kubetest.ValidateManifests(ctx, s.Config(), ns, []byte(manifest))
			var me *kubetest.ManifestError
			if !errors.As(err, &me) {
				t.Fatalf("ValidateManifests() = %v, want a *ManifestError", err)
			}
			if me.Doc != tt.wantDoc || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ValidateManifests() = %v (document %d), want document %d and %q", err, me.Doc, tt.wantDoc, tt.want)
			}
		})
	}
}

const workerRBAC = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: stroem-worker}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: stroem-worker}
rules:
  - apiGroups: [""]
    resources: [pods, pods/log, pods/status]
    verbs: [create, get, list, watch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: stroem-worker}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: stroem-worker}
subjects: [{kind: ServiceAccount, name: stroem-worker}]
`

// TestRBAC checks a Role against the real authorizer, both by asking
// (SelfSubjectAccessReview) and by acting as the ServiceAccount, including
// reading logs through the fake kubelet.
func TestRBAC(t *testing.T) {
	t.Parallel()
	s := kubetest.StartRBAC(t)
	if s.Authorization() != kubetest.RBAC {
		t.Fatalf("Authorization() = %q, want RBAC", s.Authorization())
	}
	ns := s.Namespace(t)
	ctx := testContext(t)
	pods := func(verb, sub string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: "pods", Subresource: sub}
	}
	needed := []authorizationv1.ResourceAttributes{
		pods("create", ""), pods("get", ""), pods("watch", ""), pods("delete", ""), pods("get", "log"),
	}

	if err := kubetest.CheckAccess(ctx, s.LimitedConfig(), needed...); !errors.Is(err, kubetest.ErrDenied) {
		t.Errorf("CheckAccess(limited user) = %v, want ErrDenied", err)
	}
	if err := kubetest.CheckAccess(ctx, s.Config(), needed...); err != nil {
		t.Errorf("CheckAccess(admin) = %v, want nil", err)
	}

	if err := kubetest.ApplyManifests(ctx, s.Config(), ns, []byte(workerRBAC)); err != nil {
		t.Fatal(err)
	}
	sa, err := s.ServiceAccountConfig(ctx, ns, "stroem-worker")
	if err != nil {
		t.Fatal(err)
	}
	if err := kubetest.CheckAccess(ctx, sa, needed...); err != nil {
		t.Errorf("CheckAccess(service account, needed) = %v, want nil", err)
	}
	err = kubetest.CheckAccess(ctx, sa,
		authorizationv1.ResourceAttributes{Namespace: "default", Verb: "create", Resource: "pods"},
		authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "secrets"})
	if !errors.Is(err, kubetest.ErrDenied) || !strings.Contains(err.Error(), "create secrets in namespace "+ns) {
		t.Errorf("CheckAccess(service account, not granted) = %v, want both denied", err)
	}

	// Acting as the ServiceAccount: what it may do works, the rest is 403.
	k := kubetest.NewKubelet(t, s, kubetest.KubeletOptions{Namespace: ns, AutoBind: true})
	saClient := kubernetesFor(t, sa)
	if _, err := saClient.CoreV1().Pods(ns).Create(ctx, stepPod("as-sa"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating a pod as the service account: %v", err)
	}
	if _, err := saClient.CoreV1().Pods("default").Create(ctx, stepPod("as-sa"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("creating a pod in default as the service account: %v, want Forbidden", err)
	}
	if _, err := k.WaitFor(ctx, ns, "as-sa", func(p *corev1.Pod) bool { return p.Spec.NodeName != "" }); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RunPod(ctx, ns, "as-sa"); err != nil {
		t.Fatal(err)
	}
	k.Log(ns, "as-sa", "step", "hi")
	got, err := saClient.CoreV1().Pods(ns).GetLogs("as-sa", &corev1.PodLogOptions{Container: "step"}).DoRaw(ctx)
	if err != nil || string(got) != "hi\n" {
		t.Errorf("logs as the service account = %q, %v, want \"hi\\n\"", got, err)
	}
	if err := saClient.CoreV1().Pods(ns).Delete(ctx, "as-sa", metav1.DeleteOptions{}); err != nil {
		t.Errorf("deleting as the service account: %v", err)
	}
	if err := k.WaitForPodGone(ctx, ns, "as-sa"); err != nil {
		t.Error(err)
	}
}

// TestRBACMissingRule shows a Role that lacks pods/log failing the check.
func TestRBACMissingRule(t *testing.T) {
	t.Parallel()
	s := kubetest.StartRBAC(t)
	ns := s.Namespace(t)
	ctx := testContext(t)
	role := strings.Replace(workerRBAC, "pods, pods/log, pods/status", "pods, pods/status", 1)
	if err := kubetest.ApplyManifests(ctx, s.Config(), ns, []byte(role)); err != nil {
		t.Fatal(err)
	}
	sa, err := s.ServiceAccountConfig(ctx, ns, "stroem-worker")
	if err != nil {
		t.Fatal(err)
	}
	err = kubetest.CheckAccess(ctx, sa,
		authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods"},
		authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "pods", Subresource: "log"})
	if !errors.Is(err, kubetest.ErrDenied) || !strings.Contains(err.Error(), "get pods/log") || strings.Contains(err.Error(), "create pods") {
		t.Errorf("CheckAccess() = %v, want only get pods/log denied", err)
	}
}
