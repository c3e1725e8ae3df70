// Package runner is the seam where the code of a claimed step is run: a
// Runner starts it (a local process group, a Docker container, a
// Kubernetes pod), streams its output lines to an Output, stops it when
// asked (cancel_signal, cancel_grace, then kill) and says how it ended.
// Select picks the runner for a claim exactly as the reference worker
// does (contract §1.3 of container-runners-contract.md).
//
// Everything the runners share stays outside them, in package oneshot:
// preparing the step (workspace, env, state and artifact dirs, secrets),
// cancel polling, timeouts, masking, OUTPUT/STATE parsing, the spool and
// the completion. A runner sees a prepared Job and an Output, and nothing
// of the server. Each runner is its own package below this one (local,
// docker, kubernetes), with its own doc.
package runner
