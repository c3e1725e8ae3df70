package workspace_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/workspace"
)

// trashEntries lists what waits in the cache's trash.
func trashEntries(t *testing.T, root string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, ".trash"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// runRole runs a role process to completion and returns its stdout.
func runRole(t *testing.T, shared string, args ...string) string {
	t.Helper()
	cmd := roleCmd(t, shared, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("role %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// TestPrunedRevisionLeavesNoHalfTree prunes a revision in which a step left
// directories the worker cannot delete from as they are: read-only ones, or
// (as root only) one of another user. The revision must vanish from view at
// once, whole, and a later Get of it must download a complete tree again,
// never reuse what a failed removal left behind.
func TestPrunedRevisionLeavesNoHalfTree(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// step changes the checked-out tree as a step running as the
		// worker's user would.
		step func(t *testing.T, dir string)
		// foreign, as root, adds what the worker's user cannot remove
		// until unblock gives it to that user.
		foreign bool
	}{
		{name: "read-only directories inside", step: func(t *testing.T, dir string) {
			mustMkdir(t, filepath.Join(dir, "build", "out"))
			mustWrite(t, filepath.Join(dir, "build", "out", "app.o"), "obj")
			mustChmod(t, filepath.Join(dir, "build", "out"), 0o555)
			mustChmod(t, filepath.Join(dir, "build"), 0o500)
		}},
		{name: "read-only revision directory", step: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "build.log"), "log")
			mustChmod(t, dir, 0o555)
		}},
		{name: "directory of another user", foreign: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.foreign && os.Geteuid() != 0 {
				t.Skip("needs root to make a tree the worker's user cannot remove")
			}
			shared := sharedDir(t)
			root := filepath.Join(shared, "cache")
			tars := filepath.Join(shared, "tars")
			mustMkdir(t, root)
			mustMkdir(t, tars)
			for _, rev := range []string{"r1", "r2"} {
				data := archive(t, entry{name: "rev.txt", body: rev}, entry{name: "src/main.sh", body: "echo " + rev, mode: 0o755})
				if err := os.WriteFile(filepath.Join(tars, rev+".tar.gz"), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			mustChmod(t, tars, 0o755)
			giveToRole(t, root)

			runRole(t, shared, "get", root, tars, "0", "r1")
			r1 := filepath.Join(root, "default", "r1")
			if tt.step != nil {
				tt.step(t, r1)
			}
			giveToRole(t, r1)
			if tt.foreign {
				// Left by a process of another user: the worker can neither
				// delete in it nor change its mode.
				mustMkdir(t, filepath.Join(r1, "cache"))
				mustWrite(t, filepath.Join(r1, "cache", "blob"), "x")
			}

			// r1 is neither current nor in use, and nothing is retained.
			runRole(t, shared, "get", root, tars, "0", "r2")
			if _, err := os.Lstat(r1); !os.IsNotExist(err) {
				left := []string{}
				filepath.Walk(r1, func(p string, _ os.FileInfo, _ error) error {
					left = append(left, strings.TrimPrefix(p, r1))
					return nil
				})
				t.Errorf("pruned revision still in place (Lstat: %v), holding %v", err, left)
			}

			out := runRole(t, shared, "get", root, tars, "0", "r1")
			if !strings.Contains(out, "fetched=true") {
				t.Errorf("Get(r1) after pruning it = %q, want it downloaded again", out)
			}
			got := map[string]string{}
			filepath.Walk(r1, func(p string, info os.FileInfo, err error) error {
				if err == nil && !info.IsDir() {
					data, _ := os.ReadFile(p)
					got[strings.TrimPrefix(p, r1+"/")] = string(data)
				}
				return nil
			})
			want := map[string]string{"rev.txt": "r1", "src/main.sh": "echo r1"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tree of r1 after pruning and getting it again (-want +got):\n%s", diff)
			}

			left := trashEntries(t, root)
			if !tt.foreign {
				if len(left) != 0 {
					t.Errorf("trash after pruning = %v, want it emptied", left)
				}
				return
			}
			// What could not be deleted waits in the trash, out of view,
			// and goes once nothing stops it any more.
			if len(left) != 1 {
				t.Fatalf("trash after a removal that failed part way = %v, want the pruned tree", left)
			}
			giveToRole(t, filepath.Join(root, ".trash"))
			runRole(t, shared, "get", root, tars, "0", "r1")
			if left := trashEntries(t, root); len(left) != 0 {
				t.Errorf("trash after the obstacle went = %v, want it emptied", left)
			}
		})
	}
}

// TestIncompleteRevisionIsNotUsed puts a tree without the cache's
// completeness mark where a revision goes, as a removal that failed part
// way or an older worker leaves it: Get must replace it with a complete
// download, not hand it to a step.
func TestIncompleteRevisionIsNotUsed(t *testing.T) {
	t.Parallel()
	srv := &server{revs: map[string][]byte{
		"r1": archive(t, entry{name: "rev.txt", body: "r1"}, entry{name: "lib/a.sh", body: "a"}),
	}}
	root := t.TempDir()
	c := &workspace.Cache{Root: root, Fetch: srv.fetch, MaxRetained: 1}
	half := filepath.Join(root, "default", "r1")
	mustMkdir(t, filepath.Join(half, "lib"))
	mustWrite(t, filepath.Join(half, "lib", "a.sh"), "a")

	co, err := c.Get(t.Context(), "default", "r1")
	if err != nil {
		t.Fatalf("Get(r1) = %v", err)
	}
	defer co.Release()
	if got, err := os.ReadFile(filepath.Join(co.Dir, "rev.txt")); err != nil || string(got) != "r1" {
		t.Errorf("rev.txt of r1 = %q, %v; want r1 (a fresh download)", got, err)
	}
	if n := srv.calls.Load(); n != 1 {
		t.Errorf("Get(r1) over an incomplete tree made %d downloads, want 1", n)
	}
	if left := trashEntries(t, root); len(left) != 0 {
		t.Errorf("trash = %v, want the incomplete tree removed", left)
	}
}

// TestTrashLeftoversAreRemovedLater leaves a tree in the trash as a worker
// killed while removing it would, read-only directories and all: the next
// Get removes it.
func TestTrashLeftoversAreRemovedLater(t *testing.T) {
	t.Parallel()
	srv := &server{current: "r1", revs: map[string][]byte{"r1": archive(t, entry{name: "rev.txt", body: "r1"})}}
	root := t.TempDir()
	t.Cleanup(func() { makeWritable(root) })
	left := filepath.Join(root, ".trash", "default-r0-123", "deep", "er")
	mustMkdir(t, left)
	mustWrite(t, filepath.Join(left, "f"), "x")
	mustChmod(t, left, 0o500)
	mustChmod(t, filepath.Dir(left), 0o500)

	c := &workspace.Cache{Root: root, Fetch: srv.fetch}
	co, err := c.Get(t.Context(), "default", "")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	co.Release()
	if got := trashEntries(t, root); len(got) != 0 {
		t.Errorf("trash after Get = %v, want the leftover removed", got)
	}
}
