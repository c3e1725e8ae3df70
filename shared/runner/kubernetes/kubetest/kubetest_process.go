package kubetest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is etcd or kube-apiserver: a process in its own process group whose
// output goes to a log file in the server's directory.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once Wait has returned
	waitErr error
}

func startChild(dir, name, path string, args []string) (*child, error) {
	c := &child{name: name, logPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s log: %w", name, err)
	}
	defer logf.Close() // the child has its own descriptor
	c.cmd = exec.Command(path, args...)
	c.cmd.Dir = dir
	c.cmd.Env = childEnv()
	// Files, not pipes: no copying goroutine, so Wait cannot hang on a pipe.
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = sysProcAttr()
	if err := spawn(c.cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
		releaseSpawner()
	}()
	return c, nil
}

// childEnv drops ETCD_* variables: etcd reads its flags from them too, and
// a developer's settings must not reconfigure the test server.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// exited reports whether the process has ended, and how.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.waitErr
	default:
		return false, nil
	}
}

// stop signals the process group with SIGTERM, waits grace, then SIGKILLs
// it, and checks that nothing of the group is left. The servers keep no
// state worth a clean shutdown, so grace is short.
func (c *child) stop(grace time.Duration) error {
	pgid := c.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-c.done
	}
	// The leader is reaped; anything it started in its group must be gone too.
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return fmt.Errorf("%s: process group %d still had members after its leader exited", c.name, pgid)
	}
	return nil
}

// logTail returns the end of the process's output, for error messages.
func (c *child) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", c.logPath, err)
	}
	const max = 3000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return fmt.Sprintf("last output of %s (%s):\n%s", c.name, c.logPath, b)
}

// The children are started with Pdeathsig so that they die with the test
// binary even when it is killed (a -timeout panic, SIGKILL). Pdeathsig fires
// when the *thread* that forked them exits (go.dev/issue/27505), so every
// child is started from one goroutine locked to its thread until the last
// child has been reaped; the thread itself never exits (see spawnLoop).
var spawner struct {
	mu   sync.Mutex
	live int
	reqs chan spawnReq
}

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func spawn(cmd *exec.Cmd) error {
	spawner.mu.Lock()
	if spawner.live == 0 {
		spawner.reqs = make(chan spawnReq)
		go spawnLoop(spawner.reqs)
	}
	spawner.live++
	reqs := spawner.reqs
	spawner.mu.Unlock()

	done := make(chan error, 1)
	reqs <- spawnReq{cmd: cmd, done: done}
	err := <-done
	if err != nil {
		releaseSpawner()
	}
	return err
}

func releaseSpawner() {
	spawner.mu.Lock()
	defer spawner.mu.Unlock()
	spawner.live--
	if spawner.live == 0 {
		close(spawner.reqs)
	}
}

func spawnLoop(reqs <-chan spawnReq) {
	// Unlocked on return, so the thread lives on: a goroutine that ends
	// locked takes its thread with it, and the thread may have forked other
	// Pdeathsig children before this goroutine locked it (a test's dockerd,
	// which then died mid-test when the last API server was released).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for r := range reqs {
		r.done <- r.cmd.Start()
	}
}
