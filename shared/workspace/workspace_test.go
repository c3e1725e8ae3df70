package workspace_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/workspace"
)

// entry is one tar entry for test archives.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
	size             int64 // overrides len(body) in the header when set
}

func archive(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Mode: mode, Linkname: e.link}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractKeepsTreeAndModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data := archive(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "./bin/run.sh", body: "#!/bin/sh\necho hi\n", mode: 0o755},
		entry{name: "./data/empty.txt", body: ""},
		entry{name: "./_libraries/lib/x.sh", body: "x", mode: 0o700},
		entry{name: "./link", typ: tar.TypeSymlink, link: "bin/run.sh"},
	)
	if err := workspace.Extract(bytes.NewReader(data), dir, workspace.Limits{}); err != nil {
		t.Fatalf("Extract() = %v", err)
	}
	info, err := os.Stat(filepath.Join(dir, "bin/run.sh"))
	if err != nil || info.Mode().Perm()&0o111 == 0 {
		t.Errorf("bin/run.sh = %v, %v; want an executable file", info, err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "link")); err != nil || string(got) != "#!/bin/sh\necho hi\n" {
		t.Errorf("reading through link = %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data/empty.txt")); err != nil {
		t.Errorf("empty file missing: %v", err)
	}
}

func TestExtractRefusesUnsafeArchives(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		entries []entry
		lim     workspace.Limits
		want    string
	}{
		{"absolute path", []entry{{name: "/etc/evil", body: "x"}}, workspace.Limits{}, `"/etc/evil"`},
		{"tar slip", []entry{{name: "../evil", body: "x"}}, workspace.Limits{}, `"../evil"`},
		{"nested slip", []entry{{name: "a/../../evil", body: "x"}}, workspace.Limits{}, `"a/../../evil"`},
		{"absolute link", []entry{{name: "l", typ: tar.TypeSymlink, link: "/etc"}}, workspace.Limits{}, `link "l"`},
		{"escaping link", []entry{{name: "a/l", typ: tar.TypeSymlink, link: "../../x"}}, workspace.Limits{}, `link "a/l"`},
		{"write through link", []entry{
			{name: "l", typ: tar.TypeSymlink, link: "."},
			{name: "l/../evil", body: "x"},
		}, workspace.Limits{}, `"l/../evil"`},
		{"link chain escape", []entry{
			{name: "a", typ: tar.TypeSymlink, link: "."},
			{name: "b/c", typ: tar.TypeSymlink, link: "../a/.."},
		}, workspace.Limits{}, "outside the workspace"},
		{"device file", []entry{{name: "dev", typ: tar.TypeChar}}, workspace.Limits{}, `"dev" is a character device`},
		{"fifo", []entry{{name: "p", typ: tar.TypeFifo}}, workspace.Limits{}, "named pipe"},
		{"byte bomb", []entry{{name: "a", body: strings.Repeat("x", 100)}, {name: "b", body: strings.Repeat("x", 100)}},
			workspace.Limits{MaxBytes: 150}, "exceed 150 bytes"},
		{"entry bomb", []entry{{name: "a", body: "x"}, {name: "b", body: "x"}, {name: "c", body: "x"}},
			workspace.Limits{MaxEntries: 2}, "more than 2 entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			dir := filepath.Join(parent, "tree")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			err := workspace.Extract(bytes.NewReader(archive(t, tt.entries...)), dir, tt.lim)
			if !errors.Is(err, workspace.ErrUnsafeArchive) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Extract() = %v, want ErrUnsafeArchive naming %s", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(parent, "evil")); err == nil {
				t.Errorf("a file was written outside the tree")
			}
		})
	}
}

// server is a stand-in for the tarball download: revisions by name.
type server struct {
	current string
	revs    map[string][]byte
	calls   atomic.Int32
}

func (s *server) fetch(_ context.Context, _, revision, ifNoneMatch string) (workspace.Tarball, error) {
	s.calls.Add(1)
	if revision == "" {
		if ifNoneMatch == s.current {
			return workspace.Tarball{NotModified: true}, nil
		}
		revision = s.current
	}
	data, ok := s.revs[revision]
	if !ok {
		return workspace.Tarball{}, fmt.Errorf("Revision '%s' no longer available for workspace 'default'", revision)
	}
	return workspace.Tarball{Body: io.NopCloser(bytes.NewReader(data)), Revision: revision}, nil
}

func TestCachePinnedUnpinnedAndRetention(t *testing.T) {
	t.Parallel()
	srv := &server{current: "r1", revs: map[string][]byte{}}
	for _, r := range []string{"r1", "r2", "r3", "r4"} {
		srv.revs[r] = archive(t, entry{name: "rev.txt", body: r})
	}
	c := &workspace.Cache{Root: t.TempDir(), Fetch: srv.fetch, MaxRetained: 1}
	ctx := t.Context()

	co, err := c.Get(ctx, "default", "")
	if err != nil {
		t.Fatalf("Get(unpinned) = %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(co.Dir, "rev.txt")); string(got) != "r1" || co.Revision != "r1" {
		t.Errorf("unpinned checkout = %s holding %q, want r1", co.Revision, got)
	}
	co.Release()
	// Unpinned again: a 304 reuses the cached tree.
	before := srv.calls.Load()
	if co, err = c.Get(ctx, "default", ""); err != nil || co.Revision != "r1" {
		t.Fatalf("Get(unpinned) again = %v, %v", co, err)
	}
	co.Release()
	if srv.calls.Load() != before+1 {
		t.Errorf("second unpinned Get made %d requests, want 1 (answered 304)", srv.calls.Load()-before)
	}
	// Pinned and cached: no request at all.
	before = srv.calls.Load()
	if co, err = c.Get(ctx, "default", "r1"); err != nil {
		t.Fatal(err)
	}
	co.Release()
	if srv.calls.Load() != before {
		t.Errorf("pinned Get of a cached revision made a request")
	}
	// A pinned revision in use survives pruning; unused ones beyond
	// MaxRetained go.
	held, err := c.Get(ctx, "default", "r2")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"r3", "r4"} {
		co, err := c.Get(ctx, "default", r)
		if err != nil {
			t.Fatalf("Get(%s) = %v", r, err)
		}
		co.Release()
	}
	if _, err := os.Stat(held.Dir); err != nil {
		t.Errorf("revision in use was pruned: %v", err)
	}
	held.Release()
	co, err = c.Get(ctx, "default", "r4")
	if err != nil {
		t.Fatal(err)
	}
	co.Release()
	var dirs []string
	entries, _ := os.ReadDir(filepath.Join(c.Root, "default"))
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	// r1 is current, r4 in use while pruning ran, r3 the one unused
	// revision retained; r2 pruned.
	if strings.Join(dirs, ",") != "r1,r3,r4" {
		t.Errorf("revision dirs after pruning = %v, want [r1 r3 r4]", dirs)
	}
	// A revision the server no longer has: a clear error.
	if _, err := c.Get(ctx, "default", "gone"); err == nil || !strings.Contains(err.Error(), "no longer available") {
		t.Errorf("Get(gone) = %v, want the server's message", err)
	}
}

// TestConcurrentProcesses extracts one revision from several processes
// at once: each must see a complete tree, and exactly one extracts it.
func TestConcurrentProcesses(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	tarPath := filepath.Join(t.TempDir(), "ws.tar.gz")
	var ents []entry
	for i := range 200 {
		ents = append(ents, entry{name: fmt.Sprintf("f%03d.txt", i), body: strings.Repeat("y", 1000)})
	}
	if err := os.WriteFile(tarPath, archive(t, ents...), 0o600); err != nil {
		t.Fatal(err)
	}
	const n = 4
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	for i := range n {
		cmds[i] = exec.CommandContext(t.Context(), os.Args[0], "concurrent", root, tarPath)
		cmds[i].Env = append(os.Environ(), roleEnv+"=1")
		outs[i] = &bytes.Buffer{}
		cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
		if err := cmds[i].Start(); err != nil {
			t.Fatal(err)
		}
	}
	fetched := 0
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("helper %d: %v\n%s", i, err, outs[i])
		}
		if strings.Contains(outs[i].String(), "fetched") {
			fetched++
		}
		if !strings.Contains(outs[i].String(), "files=200") {
			t.Errorf("helper %d saw an incomplete tree: %s", i, outs[i])
		}
	}
	if fetched != 1 {
		t.Errorf("%d processes downloaded the revision, want 1", fetched)
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"9c4e1f0b": "9c4e1f0b", ".": "_dot", "..": "_dotdot", "a/b": "a_b", "x y": "x_y", ".hidden": "_hidden", "": "_empty",
	} {
		if got := workspace.Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustChmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
