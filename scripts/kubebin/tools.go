//go:build tools

// The binaries built by build.sh, imported here so that `go mod tidy` keeps
// their dependencies in go.mod and go.sum.
package kubebin

import (
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
