// Package local is the runner for `type: script` steps with runner
// `local` (or none): the step's code runs as a process of the worker
// host, in its own process group, with the worker's environment minus its
// secrets (contract §2.3 of stroem-worker-contract.md): an inline script
// through `sh -c`, a workspace `source` file executed directly, other
// languages through the first interpreter found on the step's PATH, with
// their dependencies installed first where the interpreter cannot take
// them itself.
//
// Stopping a step signals its whole process group and the processes that
// escaped it (reparented to the worker as child subreaper), gives all of
// them cancel_grace_secs, then kills what is left; a step's leftovers are
// killed when its main process exits. Output is read from pipes the
// runner owns, so a grandchild holding them open cannot hang the worker.
//
// It is not where the step is prepared, watched or reported (package
// oneshot), nor a process library (package process does that).
package local
