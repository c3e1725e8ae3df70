package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Tarball is a download answer: a body to extract and the revision it
// holds, or NotModified (304) when the cached revision is current.
type Tarball struct {
	Body        io.ReadCloser
	Revision    string
	NotModified bool
}

// Fetch downloads a workspace tarball. revision pins one ("" = current);
// ifNoneMatch is the revision already cached (unpinned requests only).
type Fetch func(ctx context.Context, workspace, revision, ifNoneMatch string) (Tarball, error)

// Cache is the on-disk workspace cache shared by every worker process
// that uses the same Root.
type Cache struct {
	Root  string
	Fetch Fetch
	// MaxRetained is how many unused revisions are kept per workspace
	// besides the current one.
	MaxRetained int
	Limits      Limits
	Logger      *slog.Logger
}

// Checkout is a revision directory in use. Release it when the step ends;
// until then no process prunes it.
type Checkout struct {
	Dir      string
	Revision string
	inUse    *os.File
}

// Release lets the revision be pruned again.
func (c *Checkout) Release() {
	if c != nil && c.inUse != nil {
		c.inUse.Close()
		c.inUse = nil
	}
}

const currentFile = ".current"

// Get returns the extracted tree of workspace ws at revision (the
// current one when revision is ""), downloading it if needed. Waiting for
// another process that holds the workspace ends with ctx.
func (c *Cache) Get(ctx context.Context, ws, revision string) (*Checkout, error) {
	wsDir := filepath.Join(c.Root, Sanitize(ws))
	if err := os.MkdirAll(wsDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating workspace cache: %w", err)
	}
	co, err := c.get(ctx, ws, wsDir, revision)
	if ctx.Err() == nil {
		c.emptyTrash()
	}
	return co, err
}

func (c *Cache) get(ctx context.Context, ws, wsDir, revision string) (*Checkout, error) {
	// One process at a time checks, extracts and prunes a workspace.
	lock, err := lockFile(ctx, filepath.Join(wsDir, ".lock"), syscall.LOCK_EX)
	if err != nil {
		return nil, fmt.Errorf("locking workspace cache: %w", err)
	}
	defer lock.Close()

	rev, err := c.ensure(ctx, ws, wsDir, revision)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(wsDir, Sanitize(rev))
	inUse, err := lockFile(ctx, dir+".inuse", syscall.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("marking revision in use: %w", err)
	}
	now := time.Now()
	_ = os.Chtimes(dir, now, now) // pruning keeps the most recently used
	c.prune(wsDir)
	return &Checkout{Dir: dir, Revision: rev, inUse: inUse}, nil
}

// ensure makes sure the revision is extracted and returns its name.
func (c *Cache) ensure(ctx context.Context, ws, wsDir, revision string) (string, error) {
	if revision != "" {
		if isComplete(wsDir, Sanitize(revision)) {
			return revision, nil
		}
		if err := c.clearIncomplete(wsDir, Sanitize(revision)); err != nil {
			return "", err
		}
		tb, err := c.Fetch(ctx, ws, revision, "")
		if err != nil {
			return "", fmt.Errorf("downloading workspace %s at %s: %w", ws, revision, err)
		}
		if tb.NotModified {
			tb.Body.Close()
			return "", fmt.Errorf("downloading workspace %s at %s: server answered 304 without a cached copy", ws, revision)
		}
		if tb.Revision != "" && tb.Revision != revision {
			c.log().Warn("server sent another revision than pinned", "workspace", ws, "pinned", revision, "got", tb.Revision)
		}
		return revision, c.install(tb.Body, wsDir, revision)
	}
	cur := ""
	if data, err := os.ReadFile(filepath.Join(wsDir, currentFile)); err == nil {
		cur = strings.TrimSpace(string(data))
		if cur != "" && !isComplete(wsDir, Sanitize(cur)) {
			cur = ""
		}
	}
	tb, err := c.Fetch(ctx, ws, "", cur)
	if err != nil {
		return "", fmt.Errorf("downloading workspace %s: %w", ws, err)
	}
	if tb.NotModified {
		if tb.Body != nil {
			tb.Body.Close()
		}
		if cur == "" {
			return "", fmt.Errorf("downloading workspace %s: server answered 304 without a cached copy", ws)
		}
		return cur, nil
	}
	if tb.Revision == "" {
		tb.Body.Close()
		return "", fmt.Errorf("downloading workspace %s: the server sent no X-Revision", ws)
	}
	if !isComplete(wsDir, Sanitize(tb.Revision)) {
		if err := c.clearIncomplete(wsDir, Sanitize(tb.Revision)); err != nil {
			tb.Body.Close()
			return "", err
		}
		if err := c.install(tb.Body, wsDir, tb.Revision); err != nil {
			return "", err
		}
	} else {
		tb.Body.Close()
	}
	if err := writeAtomic(filepath.Join(wsDir, currentFile), []byte(tb.Revision+"\n")); err != nil {
		return "", fmt.Errorf("recording current revision: %w", err)
	}
	return tb.Revision, nil
}

// clearIncomplete moves whatever is at wsDir/name without a completeness
// mark out of the way of a fresh extraction. A tree that is in use can
// only have been handed out by an older worker that did not mark trees;
// it is left to its step, and this Get fails rather than pull it away.
func (c *Cache) clearIncomplete(wsDir, name string) error {
	info, err := os.Lstat(filepath.Join(wsDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil && !info.IsDir() {
		err = os.Remove(filepath.Join(wsDir, name))
	}
	if err != nil {
		return fmt.Errorf("clearing incomplete revision %s: %w", name, err)
	}
	f, err := tryLockFile(filepath.Join(wsDir, name+".inuse"), syscall.LOCK_EX)
	if err != nil {
		return fmt.Errorf("revision %s is incomplete and in use by a step: %w", name, err)
	}
	defer f.Close()
	c.log().Warn("replacing an incomplete workspace revision", "dir", filepath.Join(wsDir, name))
	if err := c.discard(wsDir, name); err != nil {
		return fmt.Errorf("clearing incomplete revision %s: %w", name, err)
	}
	return nil
}

// install extracts body into a fresh temporary directory, renames it into
// place, and marks it complete, so a half-extracted tree is never used.
func (c *Cache) install(body io.ReadCloser, wsDir, rev string) error {
	defer body.Close()
	tmp, err := os.MkdirTemp(wsDir, ".tmp-")
	if err != nil {
		return fmt.Errorf("creating extraction directory: %w", err)
	}
	if err := Extract(body, tmp, c.Limits); err != nil {
		removeTree(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		removeTree(tmp)
		return fmt.Errorf("extracting workspace: %w", err)
	}
	name := Sanitize(rev)
	if err := os.Rename(tmp, filepath.Join(wsDir, name)); err != nil {
		removeTree(tmp)
		return fmt.Errorf("installing extracted workspace: %w", err)
	}
	if err := markComplete(wsDir, name); err != nil {
		return fmt.Errorf("marking extracted workspace complete: %w", err)
	}
	return nil
}

// prune moves to the trash leftover temporary directories, incomplete
// trees, and all but the current and the MaxRetained most recently used
// revisions, skipping any in use. It runs under the workspace lock, so no
// extraction is under way.
func (c *Cache) prune(wsDir string) {
	entries, err := os.ReadDir(wsDir)
	if err != nil {
		return
	}
	cur := ""
	if data, err := os.ReadFile(filepath.Join(wsDir, currentFile)); err == nil {
		cur = Sanitize(strings.TrimSpace(string(data)))
	}
	type rev struct {
		name string
		mod  time.Time
	}
	var revs []rev
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			if err := c.toTrash(filepath.Join(wsDir, name), filepath.Base(wsDir)+"-tmp"); err != nil {
				c.log().Warn("pruning workspace extraction leftover", "error", err.Error())
			}
		case strings.HasPrefix(name, completePrefix):
			if !isDir(filepath.Join(wsDir, strings.TrimPrefix(name, completePrefix))) {
				os.Remove(filepath.Join(wsDir, name))
			}
		case e.IsDir() && !strings.HasPrefix(name, ".") && name != cur:
			if info, err := e.Info(); err == nil {
				revs = append(revs, rev{name, info.ModTime()})
			}
		}
	}
	slices.SortFunc(revs, func(a, b rev) int { return b.mod.Compare(a.mod) })
	kept := 0
	for _, r := range revs {
		f, err := tryLockFile(filepath.Join(wsDir, r.name+".inuse"), syscall.LOCK_EX)
		if err != nil {
			continue // in use by a running step
		}
		if kept < c.MaxRetained && isComplete(wsDir, r.name) {
			kept++
			f.Close()
			continue
		}
		if err := c.discard(wsDir, r.name); err != nil {
			c.log().Warn("pruning workspace revision", "dir", filepath.Join(wsDir, r.name), "error", err.Error())
		}
		f.Close()
	}
}

func (c *Cache) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Sanitize makes a workspace or revision name a single safe path element
// (contract §9.2): characters outside [A-Za-z0-9._-] become "_", and the
// names "." and ".." become "_dot" and "_dotdot".
func Sanitize(s string) string {
	switch s {
	case "":
		return "_empty"
	case ".":
		return "_dot"
	case "..":
		return "_dotdot"
	}
	b := []byte(s)
	for i, ch := range b {
		ok := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-'
		if !ok {
			b[i] = '_'
		}
	}
	if b[0] == '.' {
		// Hidden names are the cache's own (.current, .lock, .tmp-*).
		b[0] = '_'
	}
	return string(b)
}

func isDir(p string) bool {
	info, err := os.Stat(p)
	return err == nil && info.IsDir()
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
