package filelock_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/filelock"
)

// A child process holds the lock until its stdin closes (habit 15: the
// test binary re-executed as the other process).
func TestMain(m *testing.M) {
	if path := os.Getenv("FILELOCK_TEST_HOLD"); path != "" {
		l, err := filelock.TryLock(path, filelock.Options{})
		if err != nil {
			os.Stdout.WriteString("error " + err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		var b [1]byte
		os.Stdin.Read(b[:])
		l.Unlock()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func holdInChild(t *testing.T, path string) (release func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "FILELOCK_TEST_HOLD="+path)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if string(buf[:n]) != "locked\n" {
		t.Fatalf("child said %q, want locked", buf[:n])
	}
	return func() { in.Close(); cmd.Wait() }
}

func TestTryLockIsExclusiveAcrossProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.lock")
	release := holdInChild(t, path)
	if _, err := filelock.TryLock(path, filelock.Options{}); !errors.Is(err, filelock.ErrBusy) {
		t.Errorf("TryLock while a child holds it = %v, want ErrBusy", err)
	}
	release()
	l, err := filelock.TryLock(path, filelock.Options{})
	if err != nil {
		t.Fatalf("TryLock after the child released it = %v", err)
	}
	l.Unlock()
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.lock")
	release := holdInChild(t, path)
	defer release()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := filelock.Wait(ctx, path, filelock.Options{})
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context = %v, want context.Canceled", err)
	}
}

func TestWaitGetsLockWhenReleased(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.lock")
	release := holdInChild(t, path)
	done := make(chan error, 1)
	go func() {
		l, err := filelock.Wait(t.Context(), path, filelock.Options{})
		l.Unlock()
		done <- err
	}()
	release()
	if err := <-done; err != nil {
		t.Errorf("Wait after release = %v", err)
	}
}

// Removing the file on unlock must not let two holders in at once: a
// waiter that opened the old file re-checks the name after locking.
func TestRemoveOnUnlockNeverAdmitsTwo(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.lock")
	var inside, max atomic.Int32
	var wg sync.WaitGroup
	deadline := time.Now().Add(time.Second)
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				l, err := filelock.Wait(t.Context(), path, filelock.Options{RemoveOnUnlock: true})
				if err != nil {
					t.Error(err)
					return
				}
				n := inside.Add(1)
				if n > max.Load() {
					max.Store(n)
				}
				inside.Add(-1)
				l.Unlock()
			}
		})
	}
	wg.Wait()
	if got := max.Load(); got != 1 {
		t.Errorf("at most %d holders at once, want 1", got)
	}
}
