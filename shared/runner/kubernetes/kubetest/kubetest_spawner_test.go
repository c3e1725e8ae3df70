package kubetest

import (
	"errors"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// The main goroutine keeps the main thread, which never exits, so the
// goroutines below run on threads that can.
func init() { runtime.LockOSThread() }

// The spawner's thread outlives its loop: a Pdeathsig child forked from
// that thread before the spawner locked it (as another harness's dockerd
// can be) must not get its death signal when the spawner ends.
func TestSpawnerThreadOutlivesItsLoop(t *testing.T) {
	sleep := exec.Command("sleep", "3600")
	sleep.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started, ended := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(ended)
		// Fork the child from the thread the spawner loop then runs on.
		runtime.LockOSThread()
		err := sleep.Start()
		started <- err
		if err != nil {
			return
		}
		reqs := make(chan spawnReq)
		close(reqs)
		spawnLoop(reqs)
		runtime.UnlockOSThread()
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	<-ended
	// Had the thread gone, the kernel would signal the child at once; give
	// it a moment to show, as nothing announces that it did not happen.
	waited := make(chan error, 1)
	go func() { waited <- sleep.Wait() }()
	select {
	case err := <-waited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("the child forked from the spawner's thread died when the loop ended: %v", err)
		}
		t.Fatalf("waiting for the child: %v", err)
	case <-time.After(2 * time.Second):
		_ = sleep.Process.Kill()
		<-waited
	}
}
