package kubetest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// KubeletOptions configure a fake kubelet.
type KubeletOptions struct {
	// NodeName defaults to a name made from the test's name.
	NodeName string
	// Namespace limits the pods the kubelet watches (and so binds, waits
	// for and finishes deleting) to one namespace; "" watches all. Set it
	// when tests share a server.
	Namespace string
	// AutoBind binds every unbound pod it sees to this node, as a scheduler
	// would. Otherwise the test calls Bind.
	AutoBind bool
	// DeletionDelay is how long a deleted pod bound to this node stays
	// Terminating before the kubelet removes it, like a container slow to
	// stop. Negative: until FinishDeletion. Pods that are not bound, or are
	// Succeeded or Failed, are removed by the API server at once.
	DeletionDelay time.Duration
}

// Kubelet plays the node (and, for binding, the scheduler): it registers a
// Node whose kubelet endpoint is an HTTPS server in the test process, so
// the API server proxies pods/log there, and it changes pod status only
// when the test says so, except that it finishes graceful deletions of pods
// bound to its node as a kubelet does.
type Kubelet struct {
	t      testing.TB
	client kubernetes.Interface
	opts   KubeletOptions
	node   string
	srv    *httptest.Server
	inf    cache.SharedIndexInformer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed by Stop; ends follow streams

	mu       sync.Mutex
	stopped  bool
	changed  chan struct{} // closed and replaced on every pod event
	logs     map[logKey]*containerLog
	binding  map[types.UID]bool
	deleting map[types.NamespacedName]*deletion
	early    map[types.NamespacedName]bool // FinishDeletion before the deletion was seen
}

type deletion struct {
	uid     types.UID
	release chan struct{}
	once    sync.Once
}

// NewKubelet registers a node and starts its kubelet; it stops and the
// node is deleted when the test ends.
func NewKubelet(t testing.TB, s *Server, opts KubeletOptions) *Kubelet {
	t.Helper()
	if opts.NodeName == "" {
		opts.NodeName = namespacePrefix(t.Name()) + randomToken()[:6]
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Kubelet{
		t:        t,
		client:   s.Client(),
		opts:     opts,
		node:     opts.NodeName,
		cancel:   cancel,
		done:     make(chan struct{}),
		changed:  make(chan struct{}),
		logs:     map[logKey]*containerLog{},
		binding:  map[types.UID]bool{},
		deleting: map[types.NamespacedName]*deletion{},
		early:    map[types.NamespacedName]bool{},
	}
	t.Cleanup(k.Stop)
	if err := k.start(ctx); err != nil {
		t.Fatalf("kubetest: starting kubelet: %v", err)
	}
	return k
}

func (k *Kubelet) start(ctx context.Context) error {
	cert, err := selfSignedTLS()
	if err != nil {
		return err
	}
	k.srv = httptest.NewUnstartedServer(http.HandlerFunc(k.serveHTTP))
	k.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	k.srv.StartTLS()
	if err := k.registerNode(ctx); err != nil {
		return err
	}

	lw := cache.NewListWatchFromClient(k.client.CoreV1().RESTClient(), "pods", k.opts.Namespace, fields.Everything())
	k.inf = cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	_, err = k.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.onPod(ctx, obj) },
		UpdateFunc: func(_, obj any) { k.onPod(ctx, obj) },
		DeleteFunc: func(obj any) { k.onPodDeleted(obj) },
	})
	if err != nil {
		return fmt.Errorf("adding pod event handler: %w", err)
	}
	k.wg.Go(func() { k.inf.RunWithContext(ctx) })
	if !cache.WaitForCacheSync(ctx.Done(), k.inf.HasSynced) {
		return errors.New("pod informer did not sync")
	}
	return nil
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	node, err := k.client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:   k.node,
			Labels: map[string]string{"kubernetes.io/hostname": k.node, "kubernetes.io/os": "linux"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating node: %w", err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("4"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubetest fake kubelet", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		// The API server dials the first address of the types in
		// --kubelet-preferred-address-types (InternalIP) at this port.
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: k.node},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{
			KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.Port())},
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: KubeVersion, OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "kubetest://" + KubeVersion,
		},
	}
	if _, err := k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting node status: %w", err)
	}
	return nil
}

// Stop stops the kubelet and deletes its node. Pods bound to it stay as
// they are. Called automatically when the test ends.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.stopped = true
	k.mu.Unlock()
	k.cancel()
	close(k.done)
	if k.srv != nil {
		k.srv.Close()
	}
	k.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.client.CoreV1().Nodes().Delete(ctx, k.node, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		k.t.Errorf("kubetest: deleting node %s: %v", k.node, err)
	}
}

// NodeName is the name of the kubelet's node.
func (k *Kubelet) NodeName() string { return k.node }

// Port is the port of the kubelet's HTTPS endpoint on 127.0.0.1.
func (k *Kubelet) Port() int { return k.srv.Listener.Addr().(*net.TCPAddr).Port }

// onPod runs in the informer's goroutine; ctx ends when the kubelet stops.
func (k *Kubelet) onPod(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.notifyLocked()
	if k.stopped {
		return
	}
	if pod.DeletionTimestamp != nil && pod.Spec.NodeName == k.node {
		k.startDeletionLocked(ctx, pod)
		return
	}
	if k.opts.AutoBind && pod.Spec.NodeName == "" && pod.DeletionTimestamp == nil && !k.binding[pod.UID] {
		k.binding[pod.UID] = true
		ns, name := pod.Namespace, pod.Name
		k.wg.Go(func() {
			err := k.Bind(ctx, ns, name)
			if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && !k.isStopped() {
				k.t.Errorf("kubetest: kubelet binding pod %s/%s: %v", ns, name, err)
			}
		})
	}
}

func (k *Kubelet) onPodDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.notifyLocked()
	delete(k.binding, pod.UID)
	nn := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
	if d := k.deleting[nn]; d != nil && d.uid == pod.UID {
		delete(k.deleting, nn)
	}
	// A new pod of the same name starts with an empty log.
	for key, cl := range k.logs {
		if key.ns == pod.Namespace && key.pod == pod.Name {
			cl.endLocked()
			delete(k.logs, key)
		}
	}
}

func (k *Kubelet) notifyLocked() {
	close(k.changed)
	k.changed = make(chan struct{})
}

func (k *Kubelet) isStopped() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stopped
}

// Bind binds a pod to this node through pods/binding, as the scheduler
// does; the server sets spec.nodeName and the PodScheduled condition.
func (k *Kubelet) Bind(ctx context.Context, ns, name string) error {
	err := k.client.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.node},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("binding pod %s/%s to %s: %w", ns, name, k.node, err)
	}
	return nil
}

// startDeletionLocked finishes a graceful deletion after DeletionDelay (or
// FinishDeletion): running containers are marked killed (exit 137), the pod
// becomes Failed unless already terminal, and it is deleted with grace 0
// and a UID precondition, as the kubelet's status manager does.
func (k *Kubelet) startDeletionLocked(ctx context.Context, pod *corev1.Pod) {
	nn := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
	if d := k.deleting[nn]; d != nil && d.uid == pod.UID {
		return
	}
	d := &deletion{uid: pod.UID, release: make(chan struct{})}
	k.deleting[nn] = d
	delay := k.opts.DeletionDelay
	if k.early[nn] {
		delete(k.early, nn)
		delay = 0
	}
	k.wg.Go(func() {
		if delay != 0 {
			var timeout <-chan time.Time
			if delay > 0 {
				t := time.NewTimer(delay)
				defer t.Stop()
				timeout = t.C
			}
			select {
			case <-timeout:
			case <-d.release:
			case <-ctx.Done():
				return
			}
		}
		if err := k.finishDeletion(ctx, nn, d.uid); err != nil && !k.isStopped() {
			k.t.Errorf("kubetest: kubelet finishing deletion of pod %s: %v", nn, err)
		}
	})
}

func (k *Kubelet) finishDeletion(ctx context.Context, nn types.NamespacedName, uid types.UID) error {
	var killed []string
	_, err := k.UpdateStatus(ctx, nn.Namespace, nn.Name, func(pod *corev1.Pod) error {
		if pod.UID != uid {
			return apierrors.NewNotFound(corev1.Resource("pods"), nn.Name)
		}
		killed = killed[:0]
		now := metav1.Now()
		for _, list := range []*[]corev1.ContainerStatus{&pod.Status.InitContainerStatuses, &pod.Status.ContainerStatuses} {
			for i := range *list {
				cs := &(*list)[i]
				if cs.State.Running == nil {
					continue
				}
				cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "Error", StartedAt: cs.State.Running.StartedAt,
					FinishedAt: now, ContainerID: cs.ContainerID,
				}}
				cs.Ready = false
				cs.Started = ptr(false)
				killed = append(killed, cs.Name)
			}
		}
		if pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			pod.Status.Phase = corev1.PodFailed
		}
		setConditions(pod)
		return nil
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, c := range killed {
		k.EndLog(nn.Namespace, nn.Name, c)
	}
	err = k.client.CoreV1().Pods(nn.Namespace).Delete(ctx, nn.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// FinishDeletion lets the kubelet finish deleting a Terminating pod now
// instead of after DeletionDelay. Called before the kubelet has seen the
// deletion (its informer may lag behind the test), it applies as soon as
// it does.
func (k *Kubelet) FinishDeletion(ns, name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	nn := types.NamespacedName{Namespace: ns, Name: name}
	if d := k.deleting[nn]; d != nil {
		d.once.Do(func() { close(d.release) })
		return
	}
	k.early[nn] = true
}

// WaitForPod waits until a pod in ns matches the label selector (e.g.
// "app=stroem-step"; "" matches all) and returns the oldest such pod.
func (k *Kubelet) WaitForPod(ctx context.Context, ns, selector string) (*corev1.Pod, error) {
	sel, err := labels.Parse(selector)
	if err != nil {
		return nil, fmt.Errorf("parsing selector: %w", err)
	}
	var found *corev1.Pod
	err = k.wait(ctx, func() bool {
		var pods []*corev1.Pod
		for _, obj := range k.inf.GetStore().List() {
			if p := obj.(*corev1.Pod); p.Namespace == ns && sel.Matches(labels.Set(p.Labels)) {
				pods = append(pods, p)
			}
		}
		if len(pods) == 0 {
			return false
		}
		found = slices.MinFunc(pods, func(a, b *corev1.Pod) int {
			if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
				return c
			}
			return compareStrings(a.Name, b.Name)
		}).DeepCopy()
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for a pod %q in %s: %w", selector, ns, err)
	}
	return found, nil
}

// WaitFor waits until the pod ns/name exists and cond holds for it, and
// returns it.
func (k *Kubelet) WaitFor(ctx context.Context, ns, name string, cond func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var found *corev1.Pod
	err := k.wait(ctx, func() bool {
		obj, ok, _ := k.inf.GetStore().GetByKey(ns + "/" + name)
		if !ok {
			return false
		}
		if p := obj.(*corev1.Pod); cond(p) {
			found = p.DeepCopy()
			return true
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for pod %s/%s: %w", ns, name, err)
	}
	return found, nil
}

// WaitForPodGone waits until the pod ns/name no longer exists.
func (k *Kubelet) WaitForPodGone(ctx context.Context, ns, name string) error {
	err := k.wait(ctx, func() bool {
		_, ok, _ := k.inf.GetStore().GetByKey(ns + "/" + name)
		return !ok
	})
	if err != nil {
		return fmt.Errorf("waiting for pod %s/%s to be gone: %w", ns, name, err)
	}
	return nil
}

// wait re-evaluates cond after every pod event the informer sees.
func (k *Kubelet) wait(ctx context.Context, cond func() bool) error {
	for {
		k.mu.Lock()
		changed := k.changed
		k.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-k.done:
			return errors.New("kubelet stopped")
		}
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func ptr[T any](v T) *T { return &v }

// UpdateStatus applies mutate to a fresh copy of the pod and writes its
// status (pods/status), retrying on conflicts as the kubelet's status
// manager does. An error from mutate is returned as is.
func (k *Kubelet) UpdateStatus(ctx context.Context, ns, name string, mutate func(*corev1.Pod) error) (*corev1.Pod, error) {
	var out *corev1.Pod
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := k.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if err := mutate(pod); err != nil {
			return err
		}
		out, err = k.client.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("updating status of pod %s/%s: %w", ns, name, err)
	}
	return out, nil
}
