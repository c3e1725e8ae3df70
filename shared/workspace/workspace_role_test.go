package workspace_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/workspace"
	"go.uber.org/goleak"
)

// The test binary plays every other process the tests need: with roleEnv
// set it runs the role named by its first argument instead of the tests.
const roleEnv = "STROEM_WORKSPACE_TEST_ROLE"

// nobody is who role processes run as when the tests run as root: root
// ignores permission bits, so a tree a step made read-only could not get in
// the way of removing it, and the tests would not see what a worker sees.
const nobody = 65534

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) != "" {
		if err := role(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// role runs a child process role.
//
//	concurrent ROOT TAR           Get revision rev1 (downloaded from the file
//	                              TAR), print "fetched" if it downloaded and
//	                              "files=N" for the entries of the tree
//	get ROOT TARDIR RETAIN REV... Get each pinned REV in turn (downloaded from
//	                              TARDIR/REV.tar.gz) with MaxRetained RETAIN,
//	                              releasing it at once; print
//	                              "REV DIR fetched=BOOL" for each
//	hold ROOT                     Get workspace default at r1 with a download
//	                              that prints "holding" and blocks until stdin
//	                              is closed: the workspace lock stays held
func role(args []string) error {
	switch args[0] {
	case "concurrent":
		c := &workspace.Cache{Root: args[1], MaxRetained: 2,
			Fetch: func(context.Context, string, string, string) (workspace.Tarball, error) {
				fmt.Println("fetched")
				f, err := os.Open(args[2])
				return workspace.Tarball{Body: f, Revision: "rev1"}, err
			}}
		co, err := c.Get(context.Background(), "default", "rev1")
		if err != nil {
			return err
		}
		defer co.Release()
		entries, err := os.ReadDir(co.Dir)
		if err != nil {
			return err
		}
		fmt.Printf("files=%d\n", len(entries))
	case "get":
		retain, err := strconv.Atoi(args[3])
		if err != nil {
			return err
		}
		for _, rev := range args[4:] {
			fetched := false
			c := &workspace.Cache{Root: args[1], MaxRetained: retain,
				Fetch: func(_ context.Context, _, rev, _ string) (workspace.Tarball, error) {
					fetched = true
					f, err := os.Open(filepath.Join(args[2], rev+".tar.gz"))
					return workspace.Tarball{Body: f, Revision: rev}, err
				}}
			co, err := c.Get(context.Background(), "default", rev)
			if err != nil {
				return fmt.Errorf("Get(%s): %w", rev, err)
			}
			fmt.Printf("%s %s fetched=%v\n", rev, co.Dir, fetched)
			co.Release()
		}
	case "hold":
		c := &workspace.Cache{Root: args[1],
			Fetch: func(context.Context, string, string, string) (workspace.Tarball, error) {
				fmt.Println("holding")
				io.Copy(io.Discard, os.Stdin)
				return workspace.Tarball{}, errors.New("released")
			}}
		_, err := c.Get(context.Background(), "default", "r1")
		return err
	default:
		return fmt.Errorf("unknown role %q", args[0])
	}
	return nil
}

// roleCmd runs role args in a child, as nobody when the tests run as root.
// The child must be able to execute the test binary, which then needs to
// be somewhere nobody can reach: shared is such a directory (sharedDir).
func roleCmd(t *testing.T, shared string, args ...string) *exec.Cmd {
	t.Helper()
	bin := os.Args[0]
	var attr *syscall.SysProcAttr
	if os.Geteuid() == 0 {
		bin = filepath.Join(shared, "workspace.test")
		if _, err := os.Stat(bin); err != nil {
			copyFile(t, os.Args[0], bin, 0o755)
		}
		attr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Env = append(os.Environ(), roleEnv+"=1")
	cmd.SysProcAttr = attr
	cmd.WaitDelay = time.Second // a leaked pipe must not hang Wait
	return cmd
}

// sharedDir is a directory the role processes can reach and own (see
// roleCmd). Everything in it is made writable again before it is removed,
// so a test that fails with read-only trees left behind still cleans up.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "workspace-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		makeWritable(dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing test directory: %v", err)
		}
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// giveToRole hands path (recursively) to the user role processes run as.
func giveToRole(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	err := filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, nobody, nobody)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func makeWritable(dir string) {
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}
