// Package delivery owns step spools across processes: where they live,
// what they are called, who may touch one (its lock), and how a spool is
// delivered - by the process that ran the step, or later by another one
// when that process died or gave up (claim-and-run at start, supervise
// after every heartbeat and when a child dies).
//
// One attempt of one step has one spool, named by Key(job, step, attempt):
// two attempts of a step on one host never share one. A completion is
// sent at most once per attempt and never for an attempt that is over:
// once this host claimed the same step again (Supersede), or once the
// result is older than MaxAge, it is withheld (logged and counted), while
// its logs may still go out. A spool left by a process that died mid-step
// first has what the step left running stopped (Kill, with the handle the
// runner recorded), then the step is reported failed with DiedMessage.
//
// It is not the spool format (package logstream) nor the HTTP client
// (package api), and it does not run steps.
package delivery
