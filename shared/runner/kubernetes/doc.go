// Package kube is the runner for steps that run as Kubernetes pods: action
// `type: pod`, and `type: script` with `runner: pod` (contract §3 of
// container-runners-contract.md). One pod per step attempt, in the
// configured namespace, found through the kubeconfig ($KUBECONFIG,
// ~/.kube/config) or else the in-cluster service account.
//
// The pod is the reference worker's (restartPolicy Never; the `step`
// container with the argv of runner.ContainerCommand; for a script step
// the workspace in an emptyDir filled by the `workspace-init` container,
// state directories, the startup ConfigMap; the action's manifest
// overrides checked and merged by the reference worker's rules), with
// what it gets wrong fixed: label values are sanitized (raw names in
// annotations); the name is unique per attempt; the init container
// fetches the claimed revision, and the worker token and the step's
// environment are in a Secret of the pod's own, not in the pod spec; the step's end is its `step`
// container's, not the pod's phase, so a sidecar cannot hold it; the pod
// gets activeDeadlineSeconds from the step timeout; it is deleted on every
// path, a stop deletes it with the job's grace and returns once it is
// gone; and Sweep deletes what a dead worker of the same home left.
//
// The API is reached through a REST client whose scheme holds core/v1
// only: client-go's clientset registers every API group at init, which
// every step process of the worker would pay for, pod steps or not.
//
// It is not where the step is prepared, watched for cancel or timeout, or
// reported (package oneshot), and it does not run the pod's containers:
// that is the cluster's business.
package kube
