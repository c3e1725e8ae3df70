package dockertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/process"
)

// earlyExitError: the engine process exited before it answered /_ping.
type earlyExitError struct {
	err error  // from Wait
	log string // last lines of the engine's log
}

func (e *earlyExitError) Error() string {
	return fmt.Sprintf("engine exited before it was ready (%v); last log lines:\n%s", e.err, e.log)
}

func startDockerd(ctx context.Context, opts Options) (*Engine, error) {
	if uid := os.Geteuid(); uid != 0 {
		return nil, &UnavailableError{Reason: fmt.Sprintf("dockerd needs root, running as uid %d", uid)}
	}
	name := opts.Binary
	if name == "" {
		name = "dockerd"
	}
	bin, err := lookBinary(name)
	if err != nil {
		return nil, err
	}
	// dockerd starts containerd and runc by name from PATH.
	for _, dep := range []string{"containerd", "runc"} {
		if _, err := lookBinary(dep); err != nil {
			return nil, err
		}
	}
	if !opts.NoImages {
		// Fail (or skip) before paying for a daemon that could not get images.
		if _, err := readBusybox(opts.Busybox); err != nil {
			return nil, err
		}
	}
	sweepStale(opts.Logf)
	drivers := []string{opts.StorageDriver}
	if opts.StorageDriver == "" {
		drivers = []string{"overlay2", "vfs"}
	}
	major := dockerdMajor(bin)
	var e *Engine
	for i, driver := range drivers {
		e, err = launchDockerd(ctx, opts, bin, driver, major)
		var early *earlyExitError
		if err == nil || i+1 == len(drivers) || !errors.As(err, &early) || !driverRejected(early.log) {
			break
		}
		opts.Logf("dockertest: dockerd rejected storage driver %s, trying %s: %v", driver, drivers[i+1], err)
	}
	return e, err
}

// launchDockerd runs one dockerd with one storage driver in a fresh
// directory and waits until it answers; on failure nothing is left.
func launchDockerd(ctx context.Context, opts Options, bin, driver string, major int) (*Engine, error) {
	root, err := makeRoot()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		kind:    KindDocker,
		root:    root,
		socket:  filepath.Join(root, "docker.sock"),
		logPath: filepath.Join(root, "dockerd.log"),
		exited:  make(chan struct{}),
	}
	e.api = newAPIClient(e.socket)
	fail := func(err error) (*Engine, error) {
		if stopErr := e.Stop(context.WithoutCancel(ctx)); stopErr != nil {
			return nil, fmt.Errorf("%w (and cleaning up: %v)", err, stopErr)
		}
		return nil, err
	}

	config := map[string]any{}
	if major > 0 && major < 23 {
		// Before 23.0 dockerd creates /etc/docker/key.json, shared by all
		// daemons on the machine; keep it private (the key is gone in 23.0,
		// where the setting would be refused as unknown).
		config["deprecated-key-path"] = filepath.Join(root, "key.json")
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return fail(fmt.Errorf("encoding daemon.json: %w", err))
	}
	configPath := filepath.Join(root, "daemon.json")
	if err := os.WriteFile(configPath, configJSON, 0o644); err != nil {
		return fail(fmt.Errorf("writing daemon.json: %w", err))
	}
	args := []string{
		// An explicit config file so /etc/docker/daemon.json is not read.
		"--config-file", configPath,
		"-H", e.Host(),
		"--data-root", filepath.Join(root, "data"),
		// The managed containerd keeps its sockets here:
		// <exec-root>/containerd/containerd.sock (length-checked by makeRoot).
		"--exec-root", filepath.Join(root, "exec"),
		"--pidfile", filepath.Join(root, "dockerd.pid"),
		"--storage-driver", driver,
		"--iptables=false", "--ip6tables=false", "--bridge=none",
		// Containers still running at shutdown get this long; Stop removes
		// them first, so it only matters when that failed.
		"--shutdown-timeout", "3",
	}
	logFile, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(fmt.Errorf("creating engine log: %w", err))
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = daemonEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group: a terminal's ^C reaches the test binary, which
	// then stops the engine in order. Pdeathsig: if the test binary dies
	// without stopping it (go test's timeout panic), dockerd shuts down.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	begin := time.Now()
	err = process.StartCmd(cmd)
	logFile.Close() // the child has its own descriptor
	if err != nil {
		return fail(fmt.Errorf("starting dockerd: %w", err))
	}
	e.cmd = cmd
	go func() {
		e.waitErr = process.WaitCmd(cmd)
		close(e.exited)
	}()
	if err := e.waitReady(ctx); err != nil {
		return fail(err)
	}
	e.timings.Ready = time.Since(begin)
	info, err := e.api.info(ctx)
	if err != nil {
		return fail(fmt.Errorf("reading engine info: %w", err))
	}
	e.driver, e.version = info.Driver, info.ServerVersion
	opts.Logf("dockertest: dockerd %s ready in %v (API %s, storage %s, cgroup v%s %s) at %s",
		e.version, e.timings.Ready.Round(time.Millisecond), e.api.version, e.driver,
		info.CgroupVersion, info.CgroupDriver, e.Host())
	return e, nil
}

// waitReady polls GET /_ping until it answers OK, the engine exits, or
// ctx (capped at readyTimeout) ends. While dockerd initialises, the socket
// accepts connections that are answered once it is ready, so a request
// often simply waits; refused connections are retried with a short backoff.
func (e *Engine) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		err := e.api.ping(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, errAPITooOld) {
			return err
		}
		timer := time.NewTimer(delay)
		select {
		case <-e.exited:
			timer.Stop()
			return &earlyExitError{err: e.waitErr, log: logTail(e.logPath, 15)}
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("waiting for the engine to answer /_ping: %w (last attempt: %v); last log lines:\n%s",
				ctx.Err(), err, logTail(e.logPath, 15))
		case <-timer.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// driverRejected reports whether the engine's fatal error is about the
// storage driver, e.g. "failed to start daemon: error initializing graphdriver:
// driver not supported" or "'overlay2' is not supported over overlayfs".
// Only the fatal line counts: normal start-up lines mention overlayfs too.
func driverRejected(log string) bool {
	for _, line := range strings.Split(log, "\n") {
		l := strings.ToLower(line)
		fatal := strings.Contains(l, "failed to start daemon") || strings.Contains(l, "level=fatal") ||
			strings.HasPrefix(l, "error:") // podman
		if !fatal {
			continue
		}
		if strings.Contains(l, "graphdriver") || strings.Contains(l, "storage driver") ||
			strings.Contains(l, "storage-driver") || strings.Contains(l, "overlay") {
			return true
		}
	}
	return false
}

var dockerVersionRE = regexp.MustCompile(`version (\d+)\.`)

// dockerdMajor is dockerd's major version, 0 when unknown.
func dockerdMajor(bin string) int {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return 0
	}
	m := dockerVersionRE.FindSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// sbinDirs are searched too: a non-login root shell may lack them in PATH.
var sbinDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

func lookBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if !strings.Contains(name, "/") {
		for _, dir := range sbinDirs {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", &UnavailableError{Reason: fmt.Sprintf("%s not found; install it with: %s", name, InstallHint)}
}

// daemonEnv is the test's environment with the sbin directories in PATH
// and without NOTIFY_SOCKET, which would make dockerd report readiness
// to a service manager that did not start it.
func daemonEnv() []string {
	var env []string
	path := ""
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "NOTIFY_SOCKET="):
		case strings.HasPrefix(kv, "PATH="):
			path = strings.TrimPrefix(kv, "PATH=")
		default:
			env = append(env, kv)
		}
	}
	have := map[string]bool{}
	for _, d := range filepath.SplitList(path) {
		have[d] = true
	}
	for _, d := range sbinDirs {
		if !have[d] {
			path += string(os.PathListSeparator) + d
		}
	}
	return append(env, "PATH="+strings.TrimPrefix(path, string(os.PathListSeparator)))
}

func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
