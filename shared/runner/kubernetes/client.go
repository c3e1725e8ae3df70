package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// client is the few core/v1 calls the runner makes, on a REST client whose
// scheme holds core/v1 and nothing else. client-go's clientset would
// register every API group at package init (k8s.io/client-go/kubernetes/
// scheme), a cost every step process of the worker would pay, pod steps
// or not.
type client struct {
	rc *rest.RESTClient
	pc runtime.ParameterCodec
}

// LoadConfig finds the API server as kubectl does, and as the reference
// worker does: $KUBECONFIG or ~/.kube/config, else the in-cluster service
// account. The namespace is the kubeconfig context's, else the service
// account's, else "default".
func LoadConfig() (*rest.Config, string, error) {
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig or in-cluster config: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return cfg, ns, nil
}

func newClient(cfg *rest.Config) (*client, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c.ContentType = runtime.ContentTypeJSON
	if c.UserAgent == "" {
		c.UserAgent = "stroem-worker"
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("creating Kubernetes client: %w", err)
	}
	return &client{rc: rc, pc: runtime.NewParameterCodec(scheme)}, nil
}

func (c *client) createPod(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, error) {
	out := &corev1.Pod{}
	err := c.rc.Post().Namespace(pod.Namespace).Resource("pods").Body(pod).Do(ctx).Into(out)
	return out, err
}

func (c *client) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	out := &corev1.Pod{}
	err := c.rc.Get().Namespace(ns).Resource("pods").Name(name).Do(ctx).Into(out)
	return out, err
}

// deletePod deletes a pod, with grace (nil: the pod's own) and, when uid
// is set, only if it is still that pod.
func (c *client) deletePod(ctx context.Context, ns, name string, uid types.UID, grace *int64) error {
	opts := &metav1.DeleteOptions{GracePeriodSeconds: grace}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	return c.rc.Delete().Namespace(ns).Resource("pods").Name(name).Body(opts).Do(ctx).Error()
}

func (c *client) listPods(ctx context.Context, ns, selector string) (*corev1.PodList, error) {
	out := &corev1.PodList{}
	err := c.rc.Get().Namespace(ns).Resource("pods").
		VersionedParams(&metav1.ListOptions{LabelSelector: selector}, c.pc).Do(ctx).Into(out)
	return out, err
}

// watchPod watches one pod from resourceVersion rv; the server ends the
// watch after timeout, so that a silent connection is renewed.
func (c *client) watchPod(ctx context.Context, ns, name, rv string, timeout time.Duration) (watch.Interface, error) {
	secs := int64(timeout / time.Second)
	return c.rc.Get().Namespace(ns).Resource("pods").
		VersionedParams(&metav1.ListOptions{
			FieldSelector:       "metadata.name=" + name,
			ResourceVersion:     rv,
			Watch:               true,
			TimeoutSeconds:      &secs,
			AllowWatchBookmarks: false,
		}, c.pc).Watch(ctx)
}

// podLogs opens the log of one container (pods/log).
func (c *client) podLogs(ctx context.Context, ns, name string, opts *corev1.PodLogOptions) (io.ReadCloser, error) {
	return c.rc.Get().Namespace(ns).Resource("pods").Name(name).SubResource("log").
		VersionedParams(opts, c.pc).Stream(ctx)
}

func (c *client) createSecret(ctx context.Context, s *corev1.Secret) (*corev1.Secret, error) {
	out := &corev1.Secret{}
	err := c.rc.Post().Namespace(s.Namespace).Resource("secrets").Body(s).Do(ctx).Into(out)
	return out, err
}

// ownSecret makes the pod the secret's owner, so that a cluster's garbage
// collector deletes it with the pod should the worker not.
func (c *client) ownSecret(ctx context.Context, ns, name string, pod *corev1.Pod) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
	}}}})
	return c.rc.Patch(types.MergePatchType).Namespace(ns).Resource("secrets").Name(name).Body(patch).Do(ctx).Error()
}

func (c *client) deleteSecret(ctx context.Context, ns, name string) error {
	return c.rc.Delete().Namespace(ns).Resource("secrets").Name(name).Body(&metav1.DeleteOptions{}).Do(ctx).Error()
}

// listEvents lists the events of one pod, oldest first.
func (c *client) listEvents(ctx context.Context, ns, pod, uid string) (*corev1.EventList, error) {
	sel := "involvedObject.kind=Pod,involvedObject.name=" + pod
	if uid != "" {
		sel += ",involvedObject.uid=" + uid
	}
	out := &corev1.EventList{}
	err := c.rc.Get().Namespace(ns).Resource("events").
		VersionedParams(&metav1.ListOptions{FieldSelector: sel}, c.pc).Do(ctx).Into(out)
	if err == nil {
		sort.SliceStable(out.Items, func(i, j int) bool { return eventTime(&out.Items[i]).Before(eventTime(&out.Items[j])) })
	}
	return out, err
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}
