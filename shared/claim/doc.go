// Package claim is the one claim policy of both modes (claim-and-run and
// supervise): how a claim request is made, and what each answer means for
// the claimer - run the step, poll on, register again, abandon the worker
// id, or stop.
//
// A claim is never retried blindly on the same worker id: the server may
// commit it before answering, and a step whose answer was lost stays
// running under that id for as long as the id gets heartbeats. So a claim
// that may have reached the server without an answer coming back (a
// timeout, a reset, a gateway's 502/504, a garbled 2xx) is judged Abandon:
// the claimer stops heartbeating that id (once no running step uses it)
// and registers a fresh one, and the server's heartbeat timeout fails,
// and with `retry:` re-queues, the step. Only a request that surely never
// left (connection refused, DNS) is retried as it is.
//
// It is not the HTTP client (package api) nor the loop around it: the
// callers own their polling, slots and heartbeats.
package claim
