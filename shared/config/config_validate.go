package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// MinTokenLen is the shortest worker token the Strøm server accepts.
const MinTokenLen = 32

// MaxHeartbeatSecs is the longest heartbeat interval allowed: the server
// fails the running steps of a worker it has not heard from for 120 s, so
// one lost beat must not be fatal.
const MaxHeartbeatSecs = 60

// maxSecs keeps durations far from time.Duration's overflow (~292 years).
const maxSecs = 10 * 365 * 24 * 3600

// Validate checks every key and returns all problems at once (matching
// ErrInvalid), or nil. It does not read worker_token_file; Load does that.
// No message contains the worker token.
func (c *Config) Validate() error {
	if errs := c.validate(); len(errs) > 0 {
		return problems(errs)
	}
	return nil
}

// validate returns one error per problem.
func (c *Config) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		from := ""
		if src := c.Origins[key]; src != "" && src != SourceDefault {
			from = " (from " + string(src) + ")"
		}
		errs = append(errs, fmt.Errorf("%s%s: %s", key, from, fmt.Sprintf(format, args...)))
	}
	positive := func(key string, v float64) {
		if v <= 0 || v > maxSecs {
			bad(key, "must be more than 0 seconds (and at most %d), got %s; set a positive number like 2 or 0.5", maxSecs, format(&v))
		}
	}
	nonNegative := func(key string, v float64) {
		if v < 0 || v > maxSecs {
			bad(key, "must be 0 or more seconds (and at most %d), got %s", maxSecs, format(&v))
		}
	}
	oneOf := func(key, v string, allowed ...string) {
		if !slices.Contains(allowed, v) {
			bad(key, "%q is not one of %s; pick one of those", v, strings.Join(allowed, ", "))
		}
	}

	switch u, err := url.Parse(c.ServerURL); {
	case c.ServerURL == "":
		bad("server_url", "required; set server_url in the config file, STROEM__SERVER_URL or --server-url (e.g. https://stroem.example.com)")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		bad("server_url", "%q is not an http(s) URL; use the server's base URL, e.g. https://stroem.example.com", c.ServerURL)
	case u.RawQuery != "" || u.Fragment != "":
		bad("server_url", "%q must not have a query or fragment: it is the prefix of /worker/... paths", c.ServerURL)
	}

	switch {
	case c.WorkerToken == "" && c.WorkerTokenFile == "":
		bad("worker_token", "required; set it in the config file, STROEM__WORKER_TOKEN or worker_token_file (a file holding it)")
	case c.WorkerToken != "" && len(c.WorkerToken) < MinTokenLen && c.WorkerTokenFile != "":
		bad("worker_token", "must be at least %d characters (the server refuses shorter tokens), got %d; put the whole token in %s",
			MinTokenLen, len(c.WorkerToken), c.WorkerTokenFile)
	case c.WorkerToken != "" && len(c.WorkerToken) < MinTokenLen:
		bad("worker_token", "must be at least %d characters (the server refuses shorter tokens), got %d; set it in the config file, STROEM__WORKER_TOKEN or worker_token_file",
			MinTokenLen, len(c.WorkerToken))
	}

	if strings.TrimSpace(c.WorkerName) == "" {
		bad("worker_name", "must not be empty; set worker_name or STROEM__WORKER_NAME (the default, the host name, could not be read)")
	}
	if c.MaxConcurrent < 1 {
		bad("max_concurrent", "must be at least 1, got %d; it is how many steps run at once", c.MaxConcurrent)
	}
	positive("poll_interval_secs", c.PollIntervalSecs)
	nonNegative("poll_interval_max_secs", c.PollIntervalMaxSecs)
	if m := c.PollIntervalMaxSecs; m > 0 && m < c.PollIntervalSecs {
		bad("poll_interval_max_secs", "must be 0 (no idle back-off) or at least poll_interval_secs (%s), got %s; idle claims are spaced from poll_interval_secs up to it",
			format(&c.PollIntervalSecs), format(&c.PollIntervalMaxSecs))
	}
	if strings.TrimSpace(c.WorkspaceDir) == "" {
		bad("workspace_dir", "must not be empty; set a directory the worker may write, e.g. %s", DefaultWorkspaceDir)
	}

	if len(c.Capabilities) == 0 {
		bad("capabilities", "must not be empty; set the kinds of step this worker runs, e.g. capabilities: [script]")
	}
	for _, cp := range c.Capabilities {
		switch cp {
		case "script", "docker", "kubernetes":
		case "agent":
			bad("capabilities", "%q is a Strøm capability this worker does not have: it runs script, docker and kubernetes steps; remove it, and leave agent steps to the Rust worker", cp)
		default:
			bad("capabilities", "unknown capability %q; this worker knows script (old name: shell), docker and kubernetes", cp)
		}
	}
	oneOf("docker.pull_policy", c.DockerPullPolicy, "if-not-present", "always", "never")
	if ns := c.KubeNamespace; ns != "" && !dnsLabel(ns) {
		bad("kubernetes.namespace", "%q is not a namespace name (at most 63 characters of a-z, 0-9 and '-', starting and ending alphanumeric); leave it empty for the kubeconfig's or the service account's", ns)
	}
	if cm := c.KubeStartupConfigMap; cm != "" && !dnsSubdomain(cm) {
		bad("kubernetes.runner_startup_configmap", "%q is not a ConfigMap name (lower-case a-z, 0-9, '-' and '.', at most 253 characters)", cm)
	}
	if strings.TrimSpace(c.KubeInitImage) == "" {
		bad("kubernetes.init_image", "must not be empty; it is the image that fetches the workspace into a step's pod (needs sh, curl and tar), e.g. %s", DefaultKubeInitImage)
	}
	for _, t := range c.Tags {
		if slices.Contains([]string{"script", "docker", "kubernetes", "agent"}, t) {
			bad("tags", "%q is a capability, not a tag; move it to capabilities", t)
		}
	}
	if h := c.DockerHost; h != "" {
		scheme, rest, _ := strings.Cut(h, "://")
		if !slices.Contains([]string{"unix", "tcp", "http", "https"}, scheme) || rest == "" {
			bad("docker.host", "%q is not an engine address the Docker runner can use; want unix:///path/to/docker.sock or tcp://host:port (ssh:// is not supported: forward the socket)", h)
		}
	}

	positive("request_timeout_secs", c.RequestTimeoutSecs)
	positive("connect_timeout_secs", c.ConnectTimeoutSecs)
	if c.MaxRetainedRevisions < 0 {
		bad("max_retained_revisions", "must be 0 or more, got %d; it is how many old workspace revisions are kept", c.MaxRetainedRevisions)
	}
	positive("heartbeat_interval_secs", c.HeartbeatIntervalSecs)
	if c.HeartbeatIntervalSecs > MaxHeartbeatSecs {
		bad("heartbeat_interval_secs", "must be at most %d (the server fails the steps of a worker silent for 120 s), got %s",
			MaxHeartbeatSecs, format(&c.HeartbeatIntervalSecs))
	}
	positive("cancel_poll_interval_secs", c.CancelPollIntervalSecs)
	nonNegative("cancel_grace_secs", c.CancelGraceSecs)
	if _, ok := signals[c.CancelSignalName]; !ok {
		bad("cancel_signal", "%q is not one of %s; pick one of those", c.CancelSignalName, signalNames)
	}
	nonNegative("drain_timeout_secs", c.DrainTimeoutSecs)
	oneOf("on_signal", c.OnSignal, "drain", "cancel")
	positive("delivery_timeout_secs", c.DeliveryTimeoutSecs)
	positive("result_max_age_secs", c.ResultMaxAgeSecs)

	if c.Listen != "" {
		_, port, err := net.SplitHostPort(c.Listen)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			bad("listen", "%q is not host:port; use e.g. :9090 or 127.0.0.1:9090, or leave it empty to serve no health endpoint", c.Listen)
		}
	}
	oneOf("log_format", c.LogFormat, "text", "json")
	oneOf("log_level", c.LogLevel, "debug", "info", "warn", "error")
	return errs
}

// dnsLabel reports whether s is an RFC 1123 label (a namespace name).
func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// dnsSubdomain reports whether s is an RFC 1123 subdomain (a ConfigMap name).
func dnsSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if !dnsLabel(part) {
			return false
		}
	}
	return true
}
