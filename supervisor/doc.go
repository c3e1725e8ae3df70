// Package supervisor is `stroem-worker supervise`: a long-running worker
// that registers once, heartbeats, claims steps centrally while a slot is
// free, and forks a claim-and-run child of the same binary for each step.
// It drains or cancels on signals, reports steps whose child died, and
// serves /healthz, /readyz and /metrics.
//
// It does not run steps itself: everything about one step (start, logs,
// cancellation, completion) happens in the child (package oneshot), so a
// crash or leak in one step's handling cannot take down the others, and
// the supervisor's death does not fail running steps.
package supervisor
