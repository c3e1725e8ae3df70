// Package process starts a step's command as a local process in its own
// process group and makes sure the whole tree it grows dies with the step:
// Terminate signals the group, waits a grace period and SIGKILLs it; with
// EnableSubreaper, processes that escape the group (double fork, setsid)
// are reparented to the worker, where Sweep finds, kills and reaps them
// and Reap collects their zombies while a long step runs.
//
// Sweep and Reap reap children by pid, so they must never wait on a child
// someone else is still waiting for. Every child this package starts is in
// a registry, and children started elsewhere in the same process must be
// started with StartCmd and waited for with WaitCmd, or Sweep takes them
// for orphans.
//
// Start takes no context and sets no exec.Cmd Cancel or WaitDelay: the
// caller decides when and why to stop a step and calls Terminate, and as
// the child gets the caller's *os.File pipe ends directly there is no
// copying goroutine for a leaked pipe to hold up, so Wait needs no delay.
//
// It is not for reading the step's output (the caller owns the pipes; see
// Spec), nor for deciding what a step's exit means: ExitStatus is the raw
// wait status. It is Linux only: it reads /proc and uses prctl.
package process
