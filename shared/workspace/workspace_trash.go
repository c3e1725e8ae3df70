package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// A revision directory is used only when its completeness mark exists:
// <workspace dir>/.complete-<revision>, written after the extracted tree
// was renamed into place and removed before the tree is taken away. A
// tree without it (a crash between rename and mark, a removal that failed
// part way, a cache written by an older worker) is never handed to a
// step: it is moved to the trash and downloaded again. The mark is a
// hidden sibling, not a file in the tree, so a step cannot delete it and
// a tarball cannot bring one; Sanitize keeps revision names from starting
// with a dot, so it cannot collide with a revision either.
const completePrefix = ".complete-"

// trashName is the directory under Root where removed trees wait until
// they are deleted. Removal can fail part way (a step left directories
// the worker cannot write, or another user's files); the tree is then out
// of view already, and the next Get of any workspace tries again.
const trashName = ".trash"

func completeMark(wsDir, name string) string {
	return filepath.Join(wsDir, completePrefix+name)
}

// isComplete reports whether revision directory name of wsDir may be used.
func isComplete(wsDir, name string) bool {
	if _, err := os.Stat(completeMark(wsDir, name)); err != nil {
		return false
	}
	return isDir(filepath.Join(wsDir, name))
}

// markComplete records that the tree of name is whole.
func markComplete(wsDir, name string) error {
	return writeAtomic(completeMark(wsDir, name), []byte(name+"\n"))
}

// discard takes the tree wsDir/name out of view: first its mark, so that
// whatever happens next it is not used, then the tree itself, renamed
// into the trash (one atomic step, however large the tree). The caller
// holds the workspace lock, and the tree's in-use lock when it has one.
func (c *Cache) discard(wsDir, name string) error {
	if err := os.Remove(completeMark(wsDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unmarking %s: %w", name, err)
	}
	if err := c.toTrash(filepath.Join(wsDir, name), filepath.Base(wsDir)+"-"+name); err != nil {
		return err
	}
	os.Remove(filepath.Join(wsDir, name+".inuse"))
	return nil
}

// toTrash renames dir into the trash under a fresh name starting with
// label. A directory moving to another parent needs write permission on
// itself (its ".." entry changes), which a step may have taken away.
func (c *Cache) toTrash(dir, label string) error {
	trash := filepath.Join(c.Root, trashName)
	if err := os.MkdirAll(trash, 0o700); err != nil {
		return fmt.Errorf("creating trash: %w", err)
	}
	if info, err := os.Lstat(dir); err == nil && info.IsDir() && info.Mode().Perm()&0o700 != 0o700 {
		os.Chmod(dir, info.Mode().Perm()|0o700)
	}
	// rename(2) replaces an empty directory, so a fresh empty one reserves
	// a unique name (os.Rename refuses to, hence syscall.Rename).
	slot, err := os.MkdirTemp(trash, label+"-")
	if err != nil {
		return fmt.Errorf("creating trash entry: %w", err)
	}
	if err := syscall.Rename(dir, slot); err != nil {
		os.Remove(slot)
		return fmt.Errorf("moving %s to the trash: %w", dir, err)
	}
	return nil
}

// emptyTrash deletes what waits in the trash. One process at a time does
// it; others skip it rather than wait, since whatever is left is retried
// by the next Get. It runs outside the workspace lock: deleting a large
// tree should not hold up other processes.
func (c *Cache) emptyTrash() {
	trash := filepath.Join(c.Root, trashName)
	entries, err := os.ReadDir(trash)
	if err != nil {
		return
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return
	}
	lock, err := tryLockFile(filepath.Join(trash, ".lock"), syscall.LOCK_EX)
	if err != nil {
		return
	}
	defer lock.Close()
	for _, name := range names {
		if err := removeTree(filepath.Join(trash, name)); err != nil {
			c.log().Warn("deleting a removed workspace revision, will retry", "dir", filepath.Join(trash, name), "error", err.Error())
		}
	}
}

// removeTree is os.RemoveAll for a tree a step may have made read-only:
// entries of a directory without write (or search) permission cannot be
// deleted, so on failure each directory is given u+rwx on the way down and
// the removal tried again. Links are not followed: only real directories,
// as read from their parent, are changed.
func removeTree(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		// WalkDir calls this before it reads the directory, so a
		// directory without read permission is opened after the chmod.
		if info, err := d.Info(); err == nil && info.Mode().Perm()&0o700 != 0o700 {
			os.Chmod(p, info.Mode().Perm()|0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
