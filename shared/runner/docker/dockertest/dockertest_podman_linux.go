package dockertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/process"
)

// PodmanInstallHint is the command that installs what the podman mode
// needs (Appendix A of the container runners contract).
const PodmanInstallHint = "apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends podman runc conmon containernetworking-plugins catatonit busybox-static"

// podmanConf holds Appendix A's two settings (podman's default ulimits
// exceed this machine's hard limits; crun cannot handle the hybrid cgroup
// layout, runc can) plus what keeps two services apart: file locks in the
// private tmp dir instead of the machine-wide /dev/shm/libpod_lock segment,
// and a private network config directory.
const podmanConf = `[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/events.log"
lock_type = "file"
tmp_dir = "%[1]s/tmp"
image_copy_tmp_dir = "%[1]s/tmp"

[network]
network_config_dir = "%[1]s/net"
`

const podmanStorageConf = `[storage]
driver = "%s"
graphroot = "%s/storage"
runroot = "%s/run"
`

func startPodman(ctx context.Context, opts Options) (*Engine, error) {
	if uid := os.Geteuid(); uid != 0 {
		return nil, &UnavailableError{Reason: fmt.Sprintf("the podman test engine runs rootful, running as uid %d", uid)}
	}
	name := opts.Binary
	if name == "" {
		name = "podman"
	}
	var bin string
	for _, dep := range []string{name, "conmon", "runc"} {
		p, err := lookBinary(dep)
		if err != nil {
			return nil, &UnavailableError{Reason: fmt.Sprintf("%s not found; install it with: %s", dep, PodmanInstallHint)}
		}
		if dep == name {
			bin = p
		}
	}
	if !opts.NoImages {
		if _, err := readBusybox(opts.Busybox); err != nil {
			return nil, err
		}
	}
	sweepStale(opts.Logf)
	drivers := []string{opts.StorageDriver}
	if opts.StorageDriver == "" {
		drivers = []string{"overlay", "vfs"}
	}
	var (
		e   *Engine
		err error
	)
	for i, driver := range drivers {
		e, err = launchPodman(ctx, opts, bin, driver)
		var early *earlyExitError
		if err == nil || i+1 == len(drivers) || !errors.As(err, &early) || !driverRejected(early.log) {
			break
		}
		opts.Logf("dockertest: podman rejected storage driver %s, trying %s: %v", driver, drivers[i+1], err)
	}
	return e, err
}

func launchPodman(ctx context.Context, opts Options, bin, driver string) (*Engine, error) {
	root, err := makeRoot()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		kind:    KindPodman,
		root:    root,
		socket:  filepath.Join(root, "podman.sock"),
		logPath: filepath.Join(root, "podman.log"),
		exited:  make(chan struct{}),
	}
	e.api = newAPIClient(e.socket)
	// containers/storage makes its overlay directory a private bind mount
	// and leaves it mounted when the service exits.
	e.ownMounts = []string{filepath.Join(root, "storage", "overlay")}
	fail := func(err error) (*Engine, error) {
		if stopErr := e.Stop(context.WithoutCancel(ctx)); stopErr != nil {
			return nil, fmt.Errorf("%w (and cleaning up: %v)", err, stopErr)
		}
		return nil, err
	}
	for _, dir := range []string{"tmp", "net"} {
		if err := os.Mkdir(filepath.Join(root, dir), 0o700); err != nil {
			return fail(fmt.Errorf("creating %s: %w", dir, err))
		}
	}
	conf := filepath.Join(root, "containers.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(podmanConf, root)), 0o644); err != nil {
		return fail(fmt.Errorf("writing containers.conf: %w", err))
	}
	storageConf := filepath.Join(root, "storage.conf")
	if err := os.WriteFile(storageConf, []byte(fmt.Sprintf(podmanStorageConf, driver, root, root)), 0o644); err != nil {
		return fail(fmt.Errorf("writing storage.conf: %w", err))
	}
	args := []string{
		"--root", filepath.Join(root, "storage"),
		"--runroot", filepath.Join(root, "run"),
		"--tmpdir", filepath.Join(root, "tmp"),
		"--storage-driver", driver,
		"--network-config-dir", filepath.Join(root, "net"),
		"--volumepath", filepath.Join(root, "storage", "volumes"),
		"system", "service", "--time=0", e.Host(),
	}
	logFile, err := os.OpenFile(e.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fail(fmt.Errorf("creating engine log: %w", err))
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	// Only these files configure the service: the machine's
	// /etc/containers files are not read. TMPDIR: podman 4.3's import
	// handler leaves its api_load.tar copy of every imported tar there
	// (/var/tmp by default).
	env := slices.DeleteFunc(daemonEnv(), func(kv string) bool { return strings.HasPrefix(kv, "TMPDIR=") })
	cmd.Env = append(env, "CONTAINERS_CONF="+conf, "CONTAINERS_STORAGE_CONF="+storageConf,
		"TMPDIR="+filepath.Join(root, "tmp"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	begin := time.Now()
	err = process.StartCmd(cmd)
	logFile.Close()
	if err != nil {
		return fail(fmt.Errorf("starting podman: %w", err))
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
	e.driver, e.version = info.Driver, strings.TrimSpace(info.ServerVersion)
	opts.Logf("dockertest: podman %s ready in %v (API %s, storage %s, cgroup v%s %s) at %s",
		e.version, e.timings.Ready.Round(time.Millisecond), e.api.version, e.driver,
		info.CgroupVersion, info.CgroupDriver, e.Host())
	return e, nil
}
