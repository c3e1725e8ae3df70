package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// KubeVersion is the kube-apiserver version that scripts/kubebin pins; a
// test keeps the two in step.
const KubeVersion = "v1.36.3"

// BuildCommand builds the binaries this package runs, from the repository
// root.
const BuildCommand = "bash scripts/kubebin/build.sh"

// ErrNoBinaries is returned (wrapped, with the directory searched) when
// kube-apiserver or etcd is missing or not the pinned version.
var ErrNoBinaries = errors.New("kube-apiserver and etcd not built: run " + BuildCommand)

// BinDir returns where build.sh puts kube-apiserver and etcd, by the same
// rule: $STROEM_KUBE_BIN_DIR, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/stroem-worker/kube-<KubeVersion>.
func BinDir() string {
	if d := os.Getenv("STROEM_KUBE_BIN_DIR"); d != "" {
		return d
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		cache = filepath.Join(os.Getenv("HOME"), ".cache")
	}
	return filepath.Join(cache, "stroem-worker", "kube-"+KubeVersion)
}

type binaries struct {
	apiserver, etcd string
}

// findBinaries checks the binaries once per process: asking kube-apiserver
// for its version takes a fraction of a second, and a stale build should be
// rebuilt rather than silently tested against.
var findBinaries = sync.OnceValues(func() (binaries, error) {
	dir := BinDir()
	b := binaries{
		apiserver: filepath.Join(dir, "kube-apiserver"),
		etcd:      filepath.Join(dir, "etcd"),
	}
	for _, p := range []string{b.apiserver, b.etcd} {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return b, fmt.Errorf("%w (no executable %s)", ErrNoBinaries, p)
		}
	}
	out, err := exec.Command(b.apiserver, "--version").Output()
	if err != nil {
		return b, fmt.Errorf("%w (%s --version: %v)", ErrNoBinaries, b.apiserver, err)
	}
	if got := strings.TrimSpace(string(out)); !bytes.Contains(out, []byte("Kubernetes "+KubeVersion)) {
		return b, fmt.Errorf("%w (%s is %q, want Kubernetes %s)", ErrNoBinaries, b.apiserver, got, KubeVersion)
	}
	return b, nil
})

// RequireBinaries skips the test when the binaries are missing or stale,
// or fails it when $CI is set: CI builds them first (.ci/run), so missing
// binaries there mean a broken build step, not a machine without
// Kubernetes. Start does this itself; tests that call New need it.
func RequireBinaries(t testing.TB) {
	t.Helper()
	requireBinaries(t)
}

func requireBinaries(t testing.TB) binaries {
	t.Helper()
	b, err := findBinaries()
	if err == nil {
		return b
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("kubetest: %v", err)
	}
	t.Skipf("kubetest: skipping: %v", err)
	return b
}
