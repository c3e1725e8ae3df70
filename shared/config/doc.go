// Package config is the worker's configuration: one Config struct, loaded
// by Load in a fixed order — built-in defaults, then the YAML file, then
// STROEM__* environment variables, then command-line flags — and validated
// once, so every command (supervise, claim-and-run, config check) sees the
// same rules and the same messages.
//
// The keys and env names follow the Rust worker's worker-config.yaml
// (contract §11), so an existing file and Helm chart work unchanged: the
// alias workspace_cache_dir, the old capability name "shell", and the Rust
// runner keys (runner_image, docker, kubernetes, agents) are accepted, the
// last ones with a warning because this worker runs only script steps.
// Unknown keys in the file are errors (a typo must not silently fall back
// to a default); unknown STROEM__ variables are warnings (deployments set
// variables for other workers too).
//
// Every error Load returns matches ErrInvalid and names where the bad
// value came from and what to do. The worker token never appears in an
// error, a warning or Redacted. It does appear in JSON: a supervisor hands
// its Config to its claim-and-run children over a pipe.
//
// It is not for runtime state (worker id, registered capabilities) and
// does not create directories or touch the network: callers do that with
// the values it returns.
package config
