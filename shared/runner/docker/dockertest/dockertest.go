package dockertest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Images imported into every engine. None of them can be pulled: they
// exist only in the engine the harness started.
const (
	// ImageBusybox has CMD ["/bin/sh"] and no ENTRYPOINT, like alpine.
	ImageBusybox = "localhost/busybox:test"
	// ImageEntrypoint reproduces the official runner image's shape:
	// ENTRYPOINT ["/entrypoint.sh","sh","-c"], CMD ["echo 'Strøm runner ready'"],
	// WORKDIR /workspace; /entrypoint.sh sources /etc/stroem/startup.d/*.sh
	// and then execs its arguments. A Cmd of ["sh","-c",script] is swallowed
	// by it (contract §1.5) unless the Entrypoint is overridden.
	ImageEntrypoint = "localhost/busybox-entrypoint:test"
	// ImageUser runs as USER 1000 (name "user", home /home/user).
	ImageUser = "localhost/busybox-user:test"

	// UserUID is the uid (and gid) of the non-root user in every image.
	UserUID = 1000
)

// Engine kinds (Options.Kind, STROEM_TEST_ENGINE).
const (
	KindDocker = "docker"
	KindPodman = "podman"
)

// Environment variables read by the harness.
const (
	// EnvEngine selects the engine: "docker" (default) or "podman".
	EnvEngine = "STROEM_TEST_ENGINE"
	// EnvRequired set to 1 makes Shared fail instead of skip when the
	// engine cannot be used on this machine.
	EnvRequired = "STROEM_TEST_ENGINE_REQUIRED"
)

// InstallHint is the command that installs what the docker mode needs.
const InstallHint = "apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends docker.io busybox-static"

// Options tune Start. The zero value starts dockerd with overlay2 (vfs
// when overlay2 is not usable) and imports the three images.
type Options struct {
	// Kind is KindDocker or KindPodman; empty means $STROEM_TEST_ENGINE,
	// else KindDocker.
	Kind string
	// StorageDriver forces dockerd's --storage-driver; empty tries
	// overlay2 and falls back to vfs when dockerd rejects overlay2.
	StorageDriver string
	// Binary overrides the engine executable ("dockerd" or "podman"),
	// looked up in PATH and the sbin directories.
	Binary string
	// Busybox is the static busybox put into the images; empty means
	// /bin/busybox (then /usr/bin/busybox).
	Busybox string
	// NoImages skips the image import.
	NoImages bool
	// Logf receives progress lines during Start only (never after it
	// returns, so a testing.T's Logf is safe here).
	Logf func(format string, args ...any)
}

// Timings are what Start measured.
type Timings struct {
	// Ready is from starting the engine process to the first successful
	// GET /_ping (the successful attempt only, after any storage fallback).
	Ready time.Duration
	// Images is the import of all images through the Engine API.
	Images time.Duration
}

// UnavailableError means the engine cannot run on this machine (missing
// binary, not root, no static busybox). Shared skips on it.
type UnavailableError struct {
	Reason string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("container engine unavailable: %s", e.Reason)
}

// LeftoverError is returned by Stop when the engine left processes or
// mounts behind. The harness has already killed and unmounted them; the
// error says that the engine did not shut down cleanly on its own.
type LeftoverError struct {
	Processes []string // "pid cmdline"
	Mounts    []string // mount points
}

func (e *LeftoverError) Error() string {
	return fmt.Sprintf("engine left %d processes and %d mounts behind (cleaned up): processes %q, mounts %q",
		len(e.Processes), len(e.Mounts), e.Processes, e.Mounts)
}

// Engine is a running engine private to its starter. Its methods are safe
// for concurrent use.
type Engine struct {
	kind    string
	root    string // everything the engine writes lives below it
	socket  string
	driver  string
	version string // server version, e.g. 20.10.24+dfsg1
	api     *apiClient
	timings Timings
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error         // valid after exited is closed
	logPath string
	// ownMounts are mount points the engine keeps after it exits by
	// design (podman's storage), unmounted by Stop without complaint.
	ownMounts []string
	stopOnce  sync.Once
	stopErr   error
}

// Host is the engine address in DOCKER_HOST form: "unix:///…/docker.sock".
func (e *Engine) Host() string { return "unix://" + e.socket }

// SocketPath is the engine's unix socket path.
func (e *Engine) SocketPath() string { return e.socket }

// Env is the environment entry for a docker CLI or SDK (client.FromEnv)
// aimed at this engine.
func (e *Engine) Env() []string { return []string{"DOCKER_HOST=" + e.Host()} }

// Kind is KindDocker or KindPodman.
func (e *Engine) Kind() string { return e.kind }

// StorageDriver is the driver the engine reports (overlay2, vfs, …).
func (e *Engine) StorageDriver() string { return e.driver }

// ServerVersion is the engine's version string.
func (e *Engine) ServerVersion() string { return e.version }

// APIVersion is the Engine API version the harness negotiated ("1.41").
func (e *Engine) APIVersion() string { return e.api.version }

// HTTPClient sends every request to the engine's socket whatever the URL's
// host: use URLs like "http://docker/v1.41/containers/json".
func (e *Engine) HTTPClient() *http.Client { return e.api.hc }

// Timings are the start-up figures measured by Start.
func (e *Engine) Timings() Timings { return e.timings }

// Root is the temporary directory holding the engine's socket, data and
// logs; Stop removes it.
func (e *Engine) Root() string { return e.root }

// LogPath is the engine's own log file (for debugging a failing test;
// removed by Stop).
func (e *Engine) LogPath() string { return e.logPath }

// ContainerIDs lists the engine's containers, running or not; with a
// label ("key" or "key=value") only those carrying it. Runner tests use
// it to check that nothing was left behind.
func (e *Engine) ContainerIDs(ctx context.Context, label string) ([]string, error) {
	return e.api.containerIDs(ctx, label)
}

// Start starts a private engine and, unless opts.NoImages, imports the
// test images. ctx bounds the start-up only; the engine runs until Stop.
// It returns *UnavailableError when the engine cannot run here.
func Start(ctx context.Context, opts Options) (*Engine, error) {
	kind := opts.Kind
	if kind == "" {
		kind = os.Getenv(EnvEngine)
	}
	if kind == "" {
		kind = KindDocker
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	var (
		e   *Engine
		err error
	)
	switch kind {
	case KindDocker:
		e, err = startDockerd(ctx, opts)
	case KindPodman:
		e, err = startPodman(ctx, opts)
	default:
		return nil, fmt.Errorf("unknown engine kind %q (want %q or %q)", kind, KindDocker, KindPodman)
	}
	if err != nil {
		return nil, err
	}
	if !opts.NoImages {
		begin := time.Now()
		if err := e.importImages(ctx, opts.Busybox); err != nil {
			stopErr := e.Stop(context.WithoutCancel(ctx))
			if stopErr != nil {
				return nil, fmt.Errorf("importing images: %w (and stopping: %v)", err, stopErr)
			}
			return nil, fmt.Errorf("importing images: %w", err)
		}
		e.timings.Images = time.Since(begin)
		opts.Logf("dockertest: %s images imported in %v", e.kind, e.timings.Images.Round(time.Millisecond))
	}
	return e, nil
}

// makeRoot creates the engine's directory. Unix socket paths are limited
// to 107 bytes and containerd puts "containerd/containerd-debug.sock"
// below the exec root, so a long $TMPDIR falls back to /tmp.
func makeRoot() (string, error) {
	base := os.TempDir()
	if len(base) > maxBaseLen {
		base = "/tmp"
	}
	root, err := os.MkdirTemp(base, rootPrefix)
	if err != nil {
		return "", fmt.Errorf("creating engine directory: %w", err)
	}
	// EvalSymlinks: leftover detection compares this prefix with the paths
	// the kernel reports in /proc/self/mountinfo.
	if real, err := filepath.EvalSymlinks(root); err == nil {
		root = real
	}
	if len(root)+len(longestSocketSuffix) > maxSocketPath {
		os.Remove(root)
		return "", fmt.Errorf("engine directory %s is too long for unix sockets below it", root)
	}
	// Lets a later run recognise the directory as stale once this process
	// is gone (see sweepStale).
	if err := os.WriteFile(filepath.Join(root, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.Remove(root)
		return "", fmt.Errorf("writing owner pid: %w", err)
	}
	return root, nil
}

// rootBases are where makeRoot puts engine directories.
func rootBases() []string {
	if base := os.TempDir(); len(base) <= maxBaseLen && base != "/tmp" {
		return []string{base, "/tmp"}
	}
	return []string{"/tmp"}
}

// readyTimeout caps the wait for the first /_ping when ctx has no earlier
// deadline. dockerd is ready in about a second on an idle machine and a
// few seconds on a loaded 2-core one; this is for a machine that is stuck.
const readyTimeout = 2 * time.Minute

const (
	maxSocketPath       = 107 // sizeof(sockaddr_un.sun_path) - 1
	maxBaseLen          = 40
	rootPrefix          = "stroem-dockertest-"
	ownerFile           = "owner.pid"
	longestSocketSuffix = "/exec/containerd/containerd-debug.sock"
)
