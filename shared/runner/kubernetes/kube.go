package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
)

// Limits of the waiting rules (contract §3.4).
const (
	// BackoffLimit is how long a container may stay in an image pull
	// back-off (ImagePullBackOff, ErrImagePull, RegistryUnavailable,
	// CrashLoopBackOff) before the step fails.
	BackoffLimit = 300 * time.Second
	// PendingLimit is how long a pod may stay Pending before its step
	// container starts (unschedulable, a missing volume or ConfigMap,
	// slow pulls) before the step fails.
	PendingLimit = 600 * time.Second
)

const (
	// callTimeout bounds each API call that is not the step itself.
	callTimeout = time.Minute
	// drainLinger is how long the log may go on arriving after the step
	// container terminated before the runner stops reading.
	drainLinger = 10 * time.Second
	// goneMargin is how long, beyond the grace, a stopped pod may take to
	// disappear before the runner stops waiting (a node that is down
	// never finishes a deletion).
	goneMargin = 30 * time.Second
	// deadlineMargin is added to timeout_secs and the grace for the pod's
	// activeDeadlineSeconds: the worker stops a step at its timeout; the
	// pod's own deadline only stops one whose worker is gone.
	deadlineMargin = 60 * time.Second
	// watchTimeout renews a pod watch that has been silent this long.
	watchTimeout = 5 * time.Minute
	// maxFailures is how many API failures in a row the runner takes
	// (watch, status, log) before it gives up on that call.
	maxFailures = 10
)

// Runner runs steps as Kubernetes pods, one per step attempt.
type Runner struct {
	// Config is the API server's client config; nil means LoadConfig's
	// (kubeconfig, else in-cluster) on the first pod step.
	Config *rest.Config
	// Namespace of the pods; "" means the kubeconfig context's, else the
	// service account's, else "default".
	Namespace string
	// InitImage fetches the workspace ("" means DefaultInitImage).
	InitImage string
	// StartupConfigMap, when set, is mounted at /etc/stroem/startup.d and
	// its *.sh sourced before a script step's code.
	StartupConfigMap string
	// RunnerImage is the image of script steps ("" means the action's,
	// else config.DefaultRunnerImage).
	RunnerImage string
	// ServerURL and WorkerToken let the init container fetch the
	// workspace; the token goes to the pod through a Secret of its own.
	ServerURL, WorkerToken string
	// Home names this worker home (LabelHome) on every pod, for Sweep.
	Home string
	Log  *slog.Logger

	// backoffLimit and pendingLimit replace BackoffLimit and PendingLimit
	// when set (tests).
	backoffLimit, pendingLimit time.Duration
	// failures replaces maxFailures when set (tests).
	failures int

	mu sync.Mutex
	c  *client
	ns string
}

var _ runner.Runner = (*Runner)(nil)

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// client returns the worker process's one client, made on first use.
// A failure is not kept: the next step tries again.
func (r *Runner) client() (*client, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		return r.c, r.ns, nil
	}
	cfg, ns := r.Config, "default"
	if cfg == nil {
		var err error
		if cfg, ns, err = LoadConfig(); err != nil {
			return nil, "", err
		}
	}
	c, err := newClient(cfg)
	if err != nil {
		return nil, "", err
	}
	if r.Namespace != "" {
		ns = r.Namespace
	}
	r.c, r.ns = c, ns
	return c, ns, nil
}

// Environment: a pod inherits nothing of the worker's environment and
// sees its state directories at the in-container paths. There is no
// /artifacts in a pod (as with the reference worker), so no ARTIFACTS_DIR.
func (r *Runner) Environment(step *api.Step, _ []string, _ runner.Dirs) ([]string, map[string]string) {
	vars := runner.ContainerDirVars(step)
	delete(vars, "ARTIFACTS_DIR")
	return nil, vars
}

// handle is what Output.Started records for a pod: written before the
// Secret and the pod are created, so a worker dying at any point leaves
// a handle that names what to delete.
type handle struct {
	Kind      runner.Kind `json:"kind"`
	Namespace string      `json:"namespace"`
	Pod       string      `json:"pod"`
	Secret    string      `json:"secret,omitempty"`
}

// Kill deletes the pod (and its Secret) a dead worker's step left.
func (r *Runner) Kill(ctx context.Context, raw json.RawMessage) error {
	var h handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("decoding pod handle: %w", err)
	}
	c, _, err := r.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	found, err := r.remove(ctx, c, h.Namespace, h.Pod, h.Secret, nil)
	if found {
		r.log().Warn("deleted the pod a dead worker's step left", "namespace", h.Namespace, "pod", h.Pod)
	}
	return err
}

// remove deletes a pod and its Secret, whichever exist; found says
// whether the pod did.
func (r *Runner) remove(ctx context.Context, c *client, ns, pod, secret string, grace *int64) (bool, error) {
	var errs []error
	found := false
	if pod != "" {
		err := c.deletePod(ctx, ns, pod, "", grace)
		found = err == nil
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting pod %s/%s: %w", ns, pod, err))
		}
	}
	if secret != "" {
		if err := c.deleteSecret(ctx, ns, secret); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting secret %s/%s: %w", ns, secret, err))
		}
	}
	return found, errors.Join(errs...)
}

// spoolKey reports whether s can be what delivery.Key makes: a pod's
// annotation is checked before it names a lock file.
func spoolKey(s string) bool {
	if s == "" || len(s) > 400 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Sweep deletes the pods of this worker home whose step nobody owns any
// more: lock takes the lock of a step's spool (delivery's Deliverer.Lock)
// and fails while a live worker process holds it. It returns how many it
// deleted. Pods are looked for in the runner's namespace only (a manifest
// override may have put one elsewhere: Kill, from the step's handle,
// still finds that one).
func (r *Runner) Sweep(ctx context.Context, lock func(key string) (unlock func(), err error)) (int, error) {
	if r.Home == "" {
		return 0, nil
	}
	c, ns, err := r.client()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	list, err := c.listPods(ctx, ns, LabelApp+"="+AppValue+","+LabelHome+"="+runner.LabelValue(r.Home))
	if err != nil {
		return 0, fmt.Errorf("listing this worker's pods: %w", err)
	}
	removed := 0
	var errs []error
	for i := range list.Items {
		p := &list.Items[i]
		key := p.Annotations[AnnotationSpool]
		if !spoolKey(key) {
			continue
		}
		unlock, err := lock(key)
		if err != nil {
			continue // a live worker process runs it
		}
		found, err := r.remove(ctx, c, p.Namespace, p.Name, p.Annotations[AnnotationSecret], nil)
		unlock()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if found {
			removed++
			r.log().Warn("deleted a pod a dead worker left", "namespace", p.Namespace, "pod", p.Name,
				"job_id", p.Labels[LabelJob], "step", p.Annotations[AnnotationStep], "phase", string(p.Status.Phase))
		}
	}
	return removed, errors.Join(errs...)
}

// stopGrace is the grace of a delete in seconds (never below 0).
func stopGrace(d time.Duration) *int64 {
	s := int64(d / time.Second)
	if d > 0 && s == 0 {
		s = 1
	}
	return &s
}

func (r *Runner) maxFailures() int {
	if r.failures > 0 {
		return r.failures
	}
	return maxFailures
}

// podGone reports whether a pod is deleted (or being deleted).
func podGone(p *corev1.Pod) bool { return p == nil || p.DeletionTimestamp != nil }
