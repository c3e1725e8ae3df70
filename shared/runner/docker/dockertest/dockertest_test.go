package dockertest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(dockertest.M(m))
}

func TestSharedEngine(t *testing.T) {
	t.Parallel()
	eng := dockertest.Shared(t)
	if !strings.HasPrefix(eng.Host(), "unix:///") {
		t.Errorf("Host() = %q, want unix:///…", eng.Host())
	}
	if n := len(eng.SocketPath()); n > 107 {
		t.Errorf("len(SocketPath()) = %d, want <= 107", n)
	}
	if got, want := eng.Env(), []string{"DOCKER_HOST=" + eng.Host()}; !cmp.Equal(got, want) {
		t.Errorf("Env() = %q, want %q", got, want)
	}
	if d := eng.StorageDriver(); d != "overlay2" && d != "overlay" && d != "vfs" {
		t.Errorf("StorageDriver() = %q, want overlay2 (podman: overlay) or vfs", d)
	}
	resp, err := eng.HTTPClient().Get("http://docker/_ping")
	if err != nil {
		t.Fatalf("GET /_ping: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "OK" {
		t.Errorf("GET /_ping = %d %q, want 200 \"OK\"", resp.StatusCode, body)
	}
	tm := eng.Timings()
	t.Logf("%s %s, API %s, storage %s: ready in %v, images in %v", eng.Kind(), eng.ServerVersion(),
		eng.APIVersion(), eng.StorageDriver(), tm.Ready, tm.Images)
}

func TestImages(t *testing.T) {
	t.Parallel()
	eng := dockertest.Shared(t)
	type config struct {
		Entrypoint []string
		Cmd        []string
		User       string
		WorkingDir string
	}
	tests := []struct {
		ref  string
		want config
	}{
		{dockertest.ImageBusybox, config{Cmd: []string{"/bin/sh"}}},
		{dockertest.ImageEntrypoint, config{
			Entrypoint: []string{"/entrypoint.sh", "sh", "-c"},
			Cmd:        []string{"echo 'Strøm runner ready'"},
			WorkingDir: "/workspace",
		}},
		{dockertest.ImageUser, config{Cmd: []string{"/bin/sh"}, User: "1000"}},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			t.Parallel()
			var img struct{ Config config }
			if err := call(t.Context(), eng, http.MethodGet, "/images/"+tt.ref+"/json", nil, nil, &img); err != nil {
				t.Fatalf("inspecting %s: %v", tt.ref, err)
			}
			if diff := cmp.Diff(tt.want, img.Config); diff != "" {
				t.Errorf("image config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	eng := dockertest.Shared(t)
	applets := "sh echo cat ls sleep env printf true false id pwd mkdir rm kill seq head tail yes dd wc tr touch chmod grep sed awk timeout"
	tests := []struct {
		name       string
		c          container
		wantExit   int
		wantStdout string
		wantStderr string
	}{
		{
			name:       "exit code and both streams",
			c:          container{Image: dockertest.ImageBusybox, Cmd: []string{"sh", "-c", "echo hi; echo oops >&2; exit 7"}},
			wantExit:   7,
			wantStdout: "hi\n",
			wantStderr: "oops\n",
		},
		{
			name: "applets",
			c: container{Image: dockertest.ImageBusybox, Cmd: []string{"sh", "-c",
				"for a in " + applets + "; do command -v $a >/dev/null || echo missing $a; done; /usr/bin/env true"}},
		},
		{
			name:       "sh traps TERM",
			c:          container{Image: dockertest.ImageBusybox, Cmd: []string{"sh", "-c", `trap 'echo trapped; exit 143' TERM; kill -TERM $$; echo not reached`}},
			wantExit:   143,
			wantStdout: "trapped\n",
		},
		{
			name:       "no network but lo",
			c:          container{Image: dockertest.ImageBusybox, Cmd: []string{"ls", "/sys/class/net"}},
			wantStdout: "lo\n",
		},
		{
			name:       "sticky world-writable tmp",
			c:          container{Image: dockertest.ImageBusybox, Cmd: []string{"stat", "-c", "%a", "/tmp"}},
			wantStdout: "1777\n",
		},
		{
			name:       "root user",
			c:          container{Image: dockertest.ImageBusybox, Cmd: []string{"sh", "-c", "id -u; id -un"}},
			wantStdout: "0\nroot\n",
		},
		{
			name:       "non-root user",
			c:          container{Image: dockertest.ImageUser, Cmd: []string{"sh", "-c", "id -u; id -un; touch /tmp/x && echo wrote; touch /x 2>/dev/null || echo denied"}},
			wantStdout: strconv.Itoa(dockertest.UserUID) + "\nuser\nwrote\ndenied\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			exit, stdout, stderr, err := runOutput(t.Context(), eng, tt.c)
			if err != nil {
				t.Fatalf("run(%q) = %v", tt.c.Cmd, err)
			}
			if exit != tt.wantExit || stdout != tt.wantStdout || stderr != tt.wantStderr {
				t.Errorf("run(%q) = %d, %q, %q, want %d, %q, %q",
					tt.c.Cmd, exit, stdout, stderr, tt.wantExit, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

// TestEntrypointImage pins contract §1.5: with the runner image's
// ENTRYPOINT [entrypoint.sh, sh, -c], a Cmd of [sh, -c, script] runs
// `sh -c sh -c script`, i.e. an sh reading the (empty) stdin: the script
// never runs and the container exits 0. Overriding the entrypoint fixes it.
func TestEntrypointImage(t *testing.T) {
	t.Parallel()
	eng := dockertest.Shared(t)
	startup := t.TempDir()
	if err := os.WriteFile(filepath.Join(startup, "10-env.sh"), []byte("export FROM_STARTUP=sourced\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const script = "echo SCRIPT-RAN $FROM_STARTUP; exit 3"
	tests := []struct {
		name       string
		c          container
		wantExit   int
		wantStdout string
	}{
		{
			name: "image entrypoint swallows sh -c script",
			c:    container{Cmd: []string{"sh", "-c", script}},
		},
		{
			name:       "entrypoint overridden with sh -c",
			c:          container{Entrypoint: []string{"sh", "-c"}, Cmd: []string{script}},
			wantExit:   3,
			wantStdout: "SCRIPT-RAN\n",
		},
		{
			name: "entrypoint.sh sources startup.d then execs",
			c: container{Entrypoint: []string{"/entrypoint.sh"}, Cmd: []string{"sh", "-c", script},
				Binds: []string{startup + ":/etc/stroem/startup.d:ro"}},
			wantExit:   3,
			wantStdout: "SCRIPT-RAN sourced\n",
		},
		{
			name:       "image default command",
			wantStdout: "Strøm runner ready\n",
		},
		{
			name:       "working directory",
			c:          container{Entrypoint: []string{"sh", "-c"}, Cmd: []string{"pwd"}},
			wantStdout: "/workspace\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.c.Image = dockertest.ImageEntrypoint
			exit, stdout, stderr, err := runOutput(t.Context(), eng, tt.c)
			if err != nil {
				t.Fatalf("run(%q, %q) = %v", tt.c.Entrypoint, tt.c.Cmd, err)
			}
			if exit != tt.wantExit || stdout != tt.wantStdout || stderr != "" {
				t.Errorf("run(%q, %q) = %d, %q, %q, want %d, %q, \"\"",
					tt.c.Entrypoint, tt.c.Cmd, exit, stdout, stderr, tt.wantExit, tt.wantStdout)
			}
		})
	}
}

// TestStopLeavesNothing starts a second, private engine on vfs (so the
// storage fallback path runs too, next to the shared engine), leaves a
// container running and checks that Stop leaves no process, mount or file.
func TestStopLeavesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a second engine")
	}
	eng, err := dockertest.Start(t.Context(), dockertest.Options{StorageDriver: "vfs", Logf: t.Logf})
	var u *dockertest.UnavailableError
	if errors.As(err, &u) && os.Getenv(dockertest.EnvRequired) != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("Start(vfs) = %v", err)
	}
	root := eng.Root()
	if got := eng.StorageDriver(); got != "vfs" {
		t.Errorf("StorageDriver() = %q, want vfs", got)
	}
	// A marker argument no other process has: it lets us find the
	// container's process from the host.
	marker := strconv.Itoa(900000 + os.Getpid()%99999)
	id, err := create(t.Context(), eng, container{Image: dockertest.ImageBusybox, Cmd: []string{"sleep", marker}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if err := start(t.Context(), eng, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	// The start answer may come before the container's process has
	// replaced runc's init (the engine does not wait for the exec): wait
	// for it, as long as the test may run.
	for pids := pidsWith("sleep " + marker); len(pids) != 1; pids = pidsWith("sleep " + marker) {
		if d, ok := t.Deadline(); ok && time.Until(d) < 10*time.Second || len(pids) > 1 {
			t.Fatalf("processes running sleep %s = %v, want one", marker, pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if mounts := mountsBelow(root); len(mounts) == 0 {
		t.Errorf("no mounts below %s while a container runs; the leak check below would prove nothing", root)
	}

	begin := time.Now()
	if err := eng.Stop(t.Context()); err != nil {
		t.Errorf("Stop() = %v, want nil", err)
	}
	t.Logf("stopped in %v", time.Since(begin))
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("engine directory after Stop: %v, want it gone", err)
	}
	if pids := pidsWith(root + "/"); len(pids) > 0 {
		t.Errorf("processes naming %s after Stop: %v", root, pids)
	}
	if pids := pidsWith("sleep " + marker); len(pids) > 0 {
		t.Errorf("container process sleep %s after Stop: %v", marker, pids)
	}
	if mounts := mountsBelow(root); len(mounts) > 0 {
		t.Errorf("mounts below %s after Stop: %q", root, mounts)
	}
}

// TestConcurrentBinaries runs this package's container tests in a second
// test binary while this one's engine is busy, as `go test ./...` does with
// two packages that use the harness: each must get its own engine.
func TestConcurrentBinaries(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a second engine in a child test binary")
	}
	eng := dockertest.Shared(t)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^(TestSharedEngine|TestRun)$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), dockertest.EnvRequired+"=1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting child test binary: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	ran := 0
	var childErr error
loop:
	for {
		select {
		case childErr = <-done:
			break loop
		default:
		}
		exit, stdout, _, err := runOutput(t.Context(), eng, container{Image: dockertest.ImageBusybox, Cmd: []string{"echo", "parent"}})
		if err != nil || exit != 0 || stdout != "parent\n" {
			t.Errorf("parent run while child runs = %d, %q, %v, want 0, \"parent\\n\", nil", exit, stdout, err)
		}
		ran++
	}
	if childErr != nil {
		t.Fatalf("child test binary: %v\n%s", childErr, out.String())
	}
	if !strings.Contains(out.String(), "--- PASS: TestRun ") || strings.Contains(out.String(), "SKIP") {
		t.Errorf("child test binary did not run the container tests:\n%s", out.String())
	}
	if strings.Contains(out.String(), eng.Host()) {
		t.Errorf("child test binary used the parent's engine %s", eng.Host())
	}
	t.Logf("parent ran %d containers while the child ran its own engine", ran)
}

func pidsWith(s string) []string {
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(strings.ReplaceAll(string(b), "\x00", " "), s) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

func mountsBelow(root string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == root || strings.HasPrefix(f[4], root+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	return mounts
}

// The images have no registry behind them: a pull must fail, so a runner
// that always pulls has to treat the failure as non-fatal (contract §2.2).
func TestImagesAreLocalOnly(t *testing.T) {
	t.Parallel()
	eng := dockertest.Shared(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	resp, err := send(ctx, eng, http.MethodPost, "/images/create", map[string][]string{"fromImage": {dockertest.ImageBusybox}}, nil)
	if err != nil {
		return // refused outright (docker: 404/500)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "error") {
		t.Errorf("pulling %s succeeded: %s", dockertest.ImageBusybox, body)
	}
}
