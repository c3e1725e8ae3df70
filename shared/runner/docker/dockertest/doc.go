// Package dockertest gives tests a real, private container engine: it
// starts its own dockerd (with the containerd that dockerd manages) under a
// temporary directory, on a socket of its own, and imports three small
// busybox images into it without any registry, so the Docker runner can be
// tested end to end on a machine that only reaches apt and the Go proxy.
//
// One engine is shared by all the tests of one test binary: TestMain calls
// Main (or wraps m with M, e.g. for goleak), each test calls Shared(t), which
// starts the engine on first use and skips the test when dockerd, containerd,
// runc or a static /bin/busybox is missing (the skip message names the apt
// command). Main stops the engine after the tests and fails the binary if
// it left processes or mounts behind. Two test binaries running at once
// (go test ./... runs packages in parallel) each get their own engine:
// separate sockets, data roots, exec roots and a containerd each, so their
// containerd namespaces ("moby") cannot collide.
//
// The engine runs under a child subreaper of its own (docker-init, tini or
// catatonit, when installed): the shims its runtime daemonizes are then
// reparented to it, never to the test binary, which may be a subreaper
// itself (the worker makes itself one, and sweeps its orphans).
//
// The engine speaks the Docker Engine API on Host() ("unix:///…"): pass it
// to the runner's client (docker.NewClient) or a docker CLI (Env), or use
// HTTPClient for plain HTTP. The harness itself uses plain net/http to
// stay small and free of the Docker SDK's dependency tree.
//
// With STROEM_TEST_ENGINE=podman the same API is served by `podman system
// service` instead (Appendix A of the container runners contract), when
// podman is installed. STROEM_TEST_ENGINE_REQUIRED=1 turns a missing
// engine into a test failure instead of a skip, so CI cannot go green
// without running the container tests.
//
// Engine behaviour seen through the harness that a runner must allow for
// (BenchmarkAttachThroughput shows it): the container's output goes
// through one pipeline to every consumer, so with the default json-file
// log driver a burst of short lines is paced by the JSON logger (about
// 0.3 MB/s for `yes` on 2 busy cores), and dockerd closes the output
// streams 2 s after the process exits, dropping what is still queued. With
// HostConfig.LogConfig.Type "none" the runner's attach is the only
// consumer (it must then attach before start: there is no log to replay).
//
// It is not a Docker client for production code, not an image builder
// beyond the three test images, and it does not pull: images only exist
// because the harness imported them (POST /images/create?fromSrc=-). It is
// Linux only and needs root, like dockerd itself.
package dockertest
