package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	authorizationv1 "k8s.io/api/authorization/v1"
)

// TestDeployKubernetesServerSide sends every Kubernetes example to a real
// kube-apiserver (server-side dry-run, strict fields), then applies the
// RBAC example for real and checks, as its ServiceAccount and through the
// real RBAC authorizer, that it may do all the runner does and nothing
// it does not need on Secrets (a worker that could read Secrets could
// read every token of the namespace).
func TestDeployKubernetesServerSide(t *testing.T) {
	t.Parallel()
	s := kubetest.StartRBAC(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	files, _ := filepath.Glob(filepath.Join(deployDir, "kubernetes-*.yaml"))
	if len(files) == 0 {
		t.Fatal("no scripts/deploy/kubernetes-*.yaml")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ns := s.Namespace(t)
		if err := kubetest.ValidateManifests(ctx, s.Config(), ns, data); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
	}

	ns := s.Namespace(t)
	rbac, err := os.ReadFile(filepath.Join(deployDir, "kubernetes-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kubetest.ApplyManifests(ctx, s.Config(), ns, rbac); err != nil {
		t.Fatal(err)
	}
	sa, err := s.ServiceAccountConfig(ctx, ns, "stroem-worker")
	if err != nil {
		t.Fatal(err)
	}
	attr := func(verb, resource, sub string) authorizationv1.ResourceAttributes {
		return authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Resource: resource, Subresource: sub}
	}
	var needed []authorizationv1.ResourceAttributes
	for _, v := range []string{"create", "get", "list", "watch", "delete"} {
		needed = append(needed, attr(v, "pods", ""))
	}
	needed = append(needed, attr("get", "pods", "log"), attr("list", "events", ""))
	for _, v := range []string{"create", "patch", "delete"} {
		needed = append(needed, attr(v, "secrets", ""))
	}
	if err := kubetest.CheckAccess(ctx, sa, needed...); err != nil {
		t.Errorf("the runner's ServiceAccount may not do what it needs: %v", err)
	}
	for _, a := range []authorizationv1.ResourceAttributes{
		attr("get", "secrets", ""), attr("list", "secrets", ""), attr("watch", "secrets", ""),
		attr("update", "pods", ""), attr("create", "pods", "exec"), attr("patch", "pods", "status"),
		{Namespace: s.Namespace(t), Verb: "create", Resource: "pods"}, // another namespace
	} {
		if err := kubetest.CheckAccess(ctx, sa, a); err == nil {
			t.Errorf("the runner's ServiceAccount may %s %s/%s in %s, which it does not need", a.Verb, a.Resource, a.Subresource, a.Namespace)
		}
	}
}
