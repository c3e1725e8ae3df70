package workspace

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// maxLockPoll caps the wait between two tries of a busy lock: the most a
// waiter adds to the holder's time, against about 20 cheap wake-ups a
// second while a long download holds the lock.
const maxLockPoll = 50 * time.Millisecond

// lockFile takes an flock (syscall.LOCK_EX or LOCK_SH) on path, creating
// the file, and waits while another process holds a conflicting one until
// ctx ends. A blocking flock(2) can only be interrupted by a signal, so
// the waiter would sit through the holder's whole download (which retries
// for up to delivery_timeout_secs) deaf to SIGTERM, --deadline and cancel;
// and a blocking flock in a goroutine would pin a thread until the lock
// came free. So the lock is tried without blocking and tried again after
// a backoff that ends early with ctx.
func lockFile(ctx context.Context, path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	wait := time.Millisecond
	var timer *time.Timer
	for {
		err := tryLock(f, how)
		if err == nil {
			if timer != nil {
				timer.Stop()
			}
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for %s, which another process holds: %w", path, ctx.Err())
		case <-timer.C:
		}
		wait = min(2*wait, maxLockPoll)
	}
}

// tryLockFile takes an flock on path without waiting.
func tryLockFile(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := tryLock(f, how); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// tryLock takes an flock without blocking; EWOULDBLOCK means it is held.
func tryLock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
