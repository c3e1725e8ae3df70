package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// ErrBusy is returned by TryLock when another open file holds the lock.
var ErrBusy = errors.New("locked by another process")

// Lock is a held lock.
type Lock struct {
	f      *os.File
	path   string
	remove bool
	dir    bool
}

// Options shape a lock.
type Options struct {
	// RemoveOnUnlock unlinks the lock file when it is released, for locks
	// named after things that come and go (a spool per step attempt).
	RemoveOnUnlock bool
}

// TryLock takes the lock on path (creating the file, 0600) or returns
// ErrBusy at once.
func TryLock(path string, o Options) (*Lock, error) {
	for {
		l, err := try(path, o)
		if !errors.Is(err, errStale) {
			return l, err
		}
	}
}

// TryLockDir takes the lock on the directory path itself, which needs no
// lock file beside it (creating it, 0700, when create is set), or returns
// ErrBusy at once; a missing directory gives an error matching
// fs.ErrNotExist. With RemoveOnUnlock, Unlock removes the directory and
// everything in it, while the lock is still held.
func TryLockDir(path string, create bool, o Options) (*Lock, error) {
	for {
		if create {
			if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
				return nil, fmt.Errorf("creating %s: %w", path, err)
			}
		}
		l, err := tryDir(path, o)
		if !errors.Is(err, errStale) {
			return l, err
		}
		if !create {
			// Removed by its holder: there is nothing left to lock.
			return nil, fmt.Errorf("locking %s: %w", path, os.ErrNotExist)
		}
	}
}

func tryDir(path string, o Options) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return lockOpen(f, path, o, true)
}

// Wait takes the lock on path, waiting while another process holds it,
// until ctx ends (then ctx's error, wrapped). The wait polls with a
// backoff from 1 ms to 100 ms: a blocking flock cannot be interrupted by
// ctx, and a thread stuck in one would outlive it.
func Wait(ctx context.Context, path string, o Options) (*Lock, error) {
	delay := time.Millisecond
	for {
		l, err := try(path, o)
		switch {
		case err == nil:
			return l, nil
		case errors.Is(err, errStale):
			continue
		case !errors.Is(err, ErrBusy):
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

var errStale = errors.New("lock file was replaced")

func try(path string, o Options) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	return lockOpen(f, path, o, false)
}

// lockOpen flocks the open file f named path, and checks that path still
// names it (the holder before us may have removed it).
func lockOpen(f *os.File, path string, o Options, dir bool) (*Lock, error) {
	var err error
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// The holder before us may have removed the file after we opened it:
	// then we hold a lock on an inode no later process will see.
	var held, named syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &held); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := syscall.Stat(path, &named); err != nil || named.Ino != held.Ino || named.Dev != held.Dev {
		f.Close()
		return nil, errStale
	}
	return &Lock{f: f, path: path, remove: o.RemoveOnUnlock, dir: dir}, nil
}

// Unlock releases the lock (removing the file first when asked, while it
// is still held, so that no other process can lock the old file and
// believe it owns the name).
func (l *Lock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	if l.remove && l.dir {
		os.RemoveAll(l.path)
	} else if l.remove {
		os.Remove(l.path)
	}
	l.f.Close()
	l.f = nil
}
