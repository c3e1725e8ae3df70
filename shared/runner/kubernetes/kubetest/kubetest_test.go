package kubetest_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/runner/kubernetes/kubetest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// testContext bounds a test's waits well inside go test's default timeout,
// so a harness bug fails one test with a message instead of hanging all.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestKubeVersionMatchesBuildPin(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "scripts", "kubebin", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "k8s.io/kubernetes " + kubetest.KubeVersion; !strings.Contains(string(b), want) {
		t.Errorf("scripts/kubebin/go.mod does not require %q; keep kubetest.KubeVersion in step", want)
	}
	if !strings.HasSuffix(kubetest.BinDir(), "kube-"+kubetest.KubeVersion) && os.Getenv("STROEM_KUBE_BIN_DIR") == "" {
		t.Errorf("BinDir() = %q, want it to end in kube-%s as build.sh's does", kubetest.BinDir(), kubetest.KubeVersion)
	}
}

// TestStartStop starts a server of its own to check that Stop leaves no
// process behind.
func TestStartStop(t *testing.T) {
	t.Parallel()
	kubetest.RequireBinaries(t)
	ctx := testContext(t)
	s, err := kubetest.New(ctx, kubetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	etcdPid, apiPid := s.Pids()
	if _, err := s.Client().CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("getting namespace default: %v", err)
	}
	dir := filepath.Dir(s.Kubeconfig())
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	for _, pid := range []int{etcdPid, apiPid} {
		// Each was a process group leader: neither it nor its group may remain.
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kill(%d, 0) after Stop = %v, want ESRCH", pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("kill(-%d, 0) after Stop = %v, want ESRCH", pid, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server directory %s after Stop: %v, want it removed", dir, err)
	}
}

func TestKubeconfig(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("ServerVersion() through the kubeconfig: %v", err)
	}
	if v.GitVersion != kubetest.KubeVersion {
		t.Errorf("server version = %q, want %q", v.GitVersion, kubetest.KubeVersion)
	}
}

// stepPod is shaped like the runner's pods: an init container, the step
// and a sidecar.
func stepPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "stroem-step"}},
		Spec: corev1.PodSpec{
			RestartPolicy:  corev1.RestartPolicyNever,
			InitContainers: []corev1.Container{{Name: "workspace-init", Image: "curlimages/curl:latest"}},
			Containers: []corev1.Container{
				{Name: "step", Image: "busybox:test"},
				{Name: "sidecar", Image: "busybox:test"},
			},
		},
	}
}

func createPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	return p
}

// logStream reads a pod log through the API server, line by line.
type logStream struct {
	lines chan string
	err   chan error
}

func openLog(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, pod string, opts *corev1.PodLogOptions) *logStream {
	t.Helper()
	rc, err := cs.CoreV1().Pods(ns).GetLogs(pod, opts).Stream(ctx)
	if err != nil {
		t.Fatalf("opening log of %s: %v", pod, err)
	}
	ls := &logStream{lines: make(chan string, 100), err: make(chan error, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			ls.lines <- sc.Text()
		}
		ls.err <- sc.Err()
	}()
	t.Cleanup(func() { rc.Close(); <-done })
	return ls
}

func (ls *logStream) next(t *testing.T, ctx context.Context) string {
	t.Helper()
	select {
	case l := <-ls.lines:
		return l
	case err := <-ls.err:
		t.Fatalf("log stream ended (%v), want another line", err)
	case <-ctx.Done():
		t.Fatalf("waiting for a log line: %v", ctx.Err())
	}
	return ""
}

// end waits for the stream to end and returns its error (nil: clean EOF).
func (ls *logStream) end(t *testing.T, ctx context.Context) error {
	t.Helper()
	select {
	case l := <-ls.lines:
		t.Fatalf("got line %q, want the end of the stream", l)
	case err := <-ls.err:
		return err
	case <-ctx.Done():
		t.Fatalf("waiting for the end of the log stream: %v", ctx.Err())
	}
	return nil
}

func TestErrorsAreAPIErrors(t *testing.T) {
	t.Parallel()
	s := kubetest.Start(t)
	ns := s.Namespace(t)
	ctx := testContext(t)
	createPod(t, ctx, s.Client(), ns, stepPod("twice"))
	_, err := s.Client().CoreV1().Pods(ns).Create(ctx, stepPod("twice"), metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		t.Errorf("creating a pod twice: %v, want AlreadyExists", err)
	}
	bad := stepPod("bad-label")
	bad.Labels["stroem.io/step"] = "process[0]"
	_, err = s.Client().CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), `"process[0]"`) {
		t.Errorf("creating a pod with label process[0]: %v, want Invalid", err)
	}
}

func kubernetesFor(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
