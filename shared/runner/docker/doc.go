// Package docker is the runner for `type: docker` steps and `type: script`
// steps with `runner: docker`: each step runs in a container of its own,
// created, attached, started, waited for and removed through the Docker
// Engine API (Docker >= 20.10, or podman's compatible socket), as the
// reference worker's Docker runner does (contract §2 of
// container-runners-contract.md), with what it gets wrong put right:
//
//   - a script step's argv is the container's entrypoint, so an image
//     with an ENTRYPOINT (the official runner image has one) runs the
//     script instead of swallowing it;
//   - the container's real exit code is reported;
//   - stdout and stderr are read from the multiplexed stream and split
//     into lines per stream (empty lines kept, '\r' stripped, capped), so
//     OUTPUT:/STATE: lines inside multi-line writes are found;
//   - the state variables name the in-container paths;
//   - images are pulled as docker.pull_policy says (if-not-present by
//     default), a bare name means :latest, registry credentials come from
//     the Docker config file, and a failed pull of a missing image fails
//     the step with the registry's message;
//   - a stop sends cancel_signal, waits cancel_grace_secs, kills, and
//     returns as soon as the container is dead; every container is
//     labelled (job, step, attempt, worker id, worker home, spool) and
//     removed on every path, and Sweep removes what a dead worker left;
//   - writable mounts work for an image USER other than the worker's,
//     and what a root container wrote is handed back to a non-root worker;
//   - the action's workdir and resources (cpu, memory, as limits) apply.
//
// Client is a small Engine API client over net/http (unix socket, tcp,
// TLS from the Docker CLI's environment) rather than the Docker SDK: every
// claim-and-run child process links what the binary links, and the SDK's
// package initialisation would be paid once per step. Nothing here runs
// at package initialisation.
//
// It is not where a step is prepared, watched or reported (package
// oneshot), and it starts no engine (dockertest does, for tests).
package docker
