package workspace_test

import (
	"bufio"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/workspace"
)

// hangBound only stops a test that would otherwise hang: half of what is
// left before the test binary's deadline, at most two minutes. Nothing
// waits for it when the code under test works.
func hangBound(t *testing.T) time.Duration {
	d := 2 * time.Minute
	if dl, ok := t.Deadline(); ok {
		d = min(d, time.Until(dl)/2)
	}
	return d
}

// TestLockWaitHonoursContext has another process hold the workspace lock
// (its download hangs) while this one waits for it: the wait must end with
// ctx, with an error that says what was being waited for and wraps ctx's.
func TestLockWaitHonoursContext(t *testing.T) {
	t.Parallel()
	shared := sharedDir(t)
	root := filepath.Join(shared, "cache")
	mustMkdir(t, root)
	giveToRole(t, root)

	holder := roleCmd(t, shared, "hold", root)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close() // lets the holder's download end
		holder.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "holding\n" {
		t.Fatalf("holder said %q (%v), want holding; stderr: %s", line, err, stderr.String())
	}

	fetch := func(context.Context, string, string, string) (workspace.Tarball, error) {
		t.Error("the waiter downloaded while the holder held the lock")
		return workspace.Tarball{}, errors.New("unexpected download")
	}
	c := &workspace.Cache{Root: root, Fetch: fetch}
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			return context.WithCancel(t.Context())
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(t.Context(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := c.Get(ctx, "default", "r1")
				done <- err
			}()
			if tt.want == context.Canceled {
				cancel()
			}
			bound := time.NewTimer(hangBound(t))
			defer bound.Stop()
			select {
			case err := <-done:
				if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), "lock") {
					t.Errorf("Get() while another process holds the lock = %v, want %v naming the lock", err, tt.want)
				}
			case <-bound.C:
				// Unblock the waiter so the goroutine ends with the test.
				stdin.Close()
				<-done
				t.Fatalf("Get() still waited for the workspace lock long after its ctx ended")
			}
		})
	}
}
