// Package kubetest runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver as child processes on 127.0.0.1, plus a fake kubelet that
// plays the node. It is for the tests of the Kubernetes runner, which must
// talk to a real API server (validation, 409s on reused names, watches,
// graceful deletion, RBAC, pod logs proxied to a kubelet) rather than to
// client-go's fake clientset.
//
// What runs:
//   - etcd and kube-apiserver, built by `bash scripts/kubebin/build.sh` into
//     BinDir. When they are missing the tests that need them are skipped
//     (failed when CI is set) with a message that names that command.
//   - One server per test binary and Options, started on first use and
//     stopped by Main (call it from TestMain): starting costs seconds, and
//     tests isolate themselves with Server.Namespace.
//   - Token authentication for an admin (system:masters) and a limited user;
//     authorization AlwaysAllow or, with StartRBAC, RBAC, so a Role can be
//     checked against the real authorizer (CheckAccess, ServiceAccountConfig).
//   - Kubelet: a Node whose kubelet endpoint is an HTTPS server in the test
//     process. The API server proxies pods/log to it, so GetLogs with follow,
//     timestamps, sinceTime and tailLines goes through the real server. The
//     test binds pods (or lets it bind them), drives container states and
//     the pod phase, pushes log lines, drops follow streams, and the kubelet
//     finishes graceful deletions, optionally late.
//   - ValidateManifests and ApplyManifests send multi-document YAML to the
//     server (server-side dry-run, strict field validation, or for real).
//
// What it is not: a cluster. No scheduler, controller-manager or container
// runtime runs, so nothing happens that the test does not do: no pods are
// scheduled unless bound, no containers run, no garbage collection by owner
// references, no namespace deletion (a deleted namespace stays
// Terminating), no default ServiceAccount (the ServiceAccount admission
// plugin is off so pods can be created without one), no exec, attach or
// port-forward. It is not for production code: only _test.go files should
// import it.
package kubetest
