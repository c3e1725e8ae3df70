// Package oneshot is `claim-and-run`: one step, start to finish. It gets a
// worker identity, claims one step (or takes one the supervisor claimed),
// reports start, runs the step as a local process in its own process
// group, spools and streams its logs, watches for cancellation and the
// step timeout, and delivers exactly one completion. It returns an Outcome
// that the command line maps to a documented exit code.
//
// It is not a long-running loop: registration-once, slots and forking
// belong to package supervisor, which runs this same code in a child
// process per step. oneshot never imports supervisor.
package oneshot
