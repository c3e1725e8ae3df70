package kube

import "time"

// SetLimits shortens the waiting rules' limits, so that tests of them do
// not wait five or ten minutes.
func SetLimits(r *Runner, backoff, pending time.Duration) {
	r.backoffLimit, r.pendingLimit = backoff, pending
}

// PodName is podName, for tests.
var PodName = podName

// SetMaxFailures sets how many API failures in a row the runner takes.
func SetMaxFailures(r *Runner, n int) { r.failures = n }
