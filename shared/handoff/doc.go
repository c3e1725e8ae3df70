// Package handoff is the contract between `stroem-worker supervise` and
// the `claim-and-run` child it forks for a step, as restic keeps its exit
// codes beside its errors and buildkite keeps its job runner and bootstrap
// apart over one documented interface:
//
//   - fd 3 (FD): the supervisor writes one Handoff, JSON, then closes it:
//     the effective config (token included: never argv or env, where ps
//     and /proc/<pid>/environ would show it), the claimed step, the worker
//     id it was claimed with, the attempt id, and the supervisor's pid.
//     A child may be started before there is a step and wait on it.
//   - fd 4 (EventsFD): the child writes Events, one JSON object per line:
//     Spawned (what to kill if the child dies), Delivered (the result
//     reached the server), Done (figures for metrics).
//   - the child's exit code ExitNotDelivered (75) says the step ran but its
//     result is still in the spool, for the supervisor to deliver.
//
// It is not the step's own interface (env, files: package runner) nor the
// spool format (package logstream) or its delivery (package delivery).
package handoff
