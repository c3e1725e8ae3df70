package dockertest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestDriverRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		log  string
		want bool
	}{
		{"graphdriver not supported", `failed to start daemon: error initializing graphdriver: driver not supported`, true},
		{"overlay over overlayfs", `time="…" level=fatal msg="failed to start daemon: error initializing graphdriver: 'overlay2' is not supported over overlayfs"`, true},
		{"backing fs", `failed to start daemon: error initializing graphdriver: backing file system is unsupported for this graph driver`, true},
		{"unrelated fatal", `failed to start daemon: Error initializing network controller: error obtaining controller instance`, false},
		{"overlay only in info lines", "level=info msg=\"loading plugin \\\"io.containerd.snapshotter.v1.overlayfs\\\"...\"\nfailed to start daemon: pid file found, ensure docker is not running", false},
		{"podman overlay", `Error: kernel does not support overlay fs: 'overlay' is not supported over overlayfs`, true},
		{"no fatal line", `level=info msg="Starting up"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := driverRejected(tt.log); got != tt.want {
				t.Errorf("driverRejected(%q) = %v, want %v", tt.log, got, tt.want)
			}
		})
	}
}

func TestUnescapeMount(t *testing.T) {
	t.Parallel()
	if got, want := unescapeMount(`/tmp/a\040b/c`), "/tmp/a b/c"; got != want {
		t.Errorf("unescapeMount = %q, want %q", got, want)
	}
}

func TestSweepStale(t *testing.T) {
	t.Parallel()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale, err := os.MkdirTemp("/tmp", rootPrefix)
	if err != nil {
		t.Fatal(err)
	}
	live, err := makeRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stale); os.RemoveAll(live) })
	if err := os.WriteFile(filepath.Join(stale, ownerFile), []byte(strconv.Itoa(dead.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	sweepStale(t.Logf)
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale directory of dead pid %d after sweepStale: %v, want it gone", dead.Process.Pid, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("directory of this process after sweepStale: %v, want it kept", err)
	}
}
