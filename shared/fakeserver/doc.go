// Package fakeserver is an http.Handler that behaves like the worker API of
// the Strøm server (fremvaerk/stroem v0.15.26), as written down in
// /work/shared/stroem-worker-contract.md. The comments cite that contract by
// section (§1.5 and so on).
//
// It is for: the client tests of shared/api, the end-to-end tests of the
// worker (through a real httptest.Server, so paths, headers, JSON and status
// codes are the real wire format), the `stroem-worker demo` command and the
// `stroem-worker dev-server` command (the /dev/* endpoints let a person queue
// jobs and look at them with curl).
//
// What it reproduces faithfully, because workers depend on it: the bearer
// token check and its three 401 messages; axum's plain-text extractor
// rejections (415, 400, 422, 413); serde's strictness (explicit null for a
// list or bool field is a 422); the ten-null-keys no-work reply; claim
// matching on the capabilities and tags sent in the claim; unconditional
// start and complete (last writer wins); the complete rule for failed steps;
// log records; the in-memory cancel set that a restart forgets; the 500 for a
// worker row that no longer exists; workspace tarball ETag/304/404; recovery
// sweep rules 1 and 4 (§8). Artifacts and state snapshots are kept in memory
// with the server's status codes (§10, §1.10), as if storage were configured.
//
// Retries are modelled as the server's retry: orchestration leaves them: a
// failed step with attempts left (StepSpec.Retries), or one a test
// re-queues (Requeue), is ready again at once, without retry_at delays.
// Each step counts its attempts and, per attempt, the claims, starts and
// completes that arrived during it (StepState.Attempts), so a test can
// tell how often a step was claimed and whether a stale result landed on
// a later attempt.
//
// What it is not: a Strøm server. There are no task definitions, no
// templates (a step can only be told to fail rendering), no dependencies
// between steps (every step of a job is ready at once), no loops, hooks,
// step or job timeouts, per-job artifact caps or secrets, and no
// persistence.
//
// Faults (SetFault, RandomFaults, Down) are injected before a request is
// handled (a status, a delay, a dropped connection: nothing is committed)
// or after it (Fault.DelayAnswer, Fault.DropAnswer: the server commits,
// then the answer is late or lost), so that lost claim answers, log
// batches sent twice and completes applied without an answer can be
// tested. Every stored log batch is kept in LogBatches with a count of
// earlier identical ones, so tests can count duplicates.
//
// Claims are served in FIFO order of enqueueing so that tests are
// deterministic; the real server picks a random matching step (§1.5).
// Test-facing methods (AddJob, Step, Logs, WaitFor, SetFault, ...) are
// safe for concurrent use; the Server keeps no global state.
package fakeserver
