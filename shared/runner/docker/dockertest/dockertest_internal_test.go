package dockertest

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestNegotiateVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		server  string
		want    string
		wantErr error
	}{
		{"1.41", "1.41", nil},      // Debian docker.io 20.10, podman 4.3
		{"1.43", "1.43", nil},      // Docker 24
		{"1.52", "1.47", nil},      // Docker 29: capped, still >= its minimum 1.44
		{"", "1.41", nil},          // no header
		{"1.40", "", errAPITooOld}, // Docker 19.03
		{"1.9", "", errAPITooOld},
	}
	for _, tt := range tests {
		got, err := negotiateVersion(tt.server)
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("negotiateVersion(%q) = %q, %v, want %q, %v", tt.server, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestMakeRootShortForSockets(t *testing.T) {
	long := "/tmp/" + strings.Repeat("d", 80)
	if err := os.MkdirAll(long, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(long) })
	t.Setenv("TMPDIR", long)
	root, err := makeRoot()
	if err != nil {
		t.Fatalf("makeRoot() with a long TMPDIR = %v", err)
	}
	defer os.RemoveAll(root)
	if !strings.HasPrefix(root, "/tmp/stroem-dockertest-") {
		t.Errorf("makeRoot() = %q, want it under /tmp", root)
	}
	if n := len(root + longestSocketSuffix); n > maxSocketPath {
		t.Errorf("longest socket path below %q is %d bytes, want <= %d", root, n, maxSocketPath)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	_, err := Start(t.Context(), Options{Kind: KindDocker, Binary: "no-such-dockerd"})
	var u *UnavailableError
	if !errors.As(err, &u) {
		t.Fatalf("Start(no-such-dockerd) = %v, want *UnavailableError", err)
	}
	if os.Geteuid() == 0 && !strings.Contains(u.Error(), InstallHint) {
		t.Errorf("Start(no-such-dockerd) = %v, want the install command in it", err)
	}
	_, err = readBusybox("/bin/sh") // dynamically linked on every distribution
	if !errors.As(err, &u) || !strings.Contains(u.Reason, "busybox-static") {
		t.Errorf("readBusybox(/bin/sh) = %v, want *UnavailableError naming busybox-static", err)
	}
}

func TestRootfsTar(t *testing.T) {
	t.Parallel()
	b, err := rootfsTar([]byte("BUSYBOX"), []tarFile{{name: "entrypoint.sh", mode: 0o755, body: entrypointScript}})
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Type     byte
		Mode     int64
		Uid      int
		Linkname string
		Body     string
	}
	got := map[string]entry{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		got[h.Name] = entry{h.Typeflag, h.Mode, h.Uid, h.Linkname, string(body)}
	}
	want := map[string]entry{
		"bin/busybox":   {tar.TypeReg, 0o755, 0, "", "BUSYBOX"},
		"bin/sh":        {tar.TypeSymlink, 0o777, 0, "busybox", ""},
		"bin/yes":       {tar.TypeSymlink, 0o777, 0, "busybox", ""},
		"usr/bin/env":   {tar.TypeSymlink, 0o777, 0, "/bin/busybox", ""},
		"tmp/":          {tar.TypeDir, 0o1777, 0, "", ""},
		"home/user/":    {tar.TypeDir, 0o755, UserUID, "", ""},
		"entrypoint.sh": {tar.TypeReg, 0o755, 0, "", entrypointScript},
	}
	for name, w := range want {
		if diff := cmp.Diff(w, got[name]); diff != "" {
			t.Errorf("rootfsTar entry %s (-want +got):\n%s", name, diff)
		}
	}
	if !strings.Contains(got["etc/passwd"].Body, "user:x:1000:1000:") {
		t.Errorf("etc/passwd = %q, want a uid 1000 user", got["etc/passwd"].Body)
	}
}
