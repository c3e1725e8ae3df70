package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/runner"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// Waiting reasons (contract §3.4): failFast ones never recover; backoff
// ones may, within BackoffLimit.
var (
	failFast = []string{"InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"}
	backoff  = []string{"ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "RegistryUnavailable"}
)

// Run creates the step's pod (and the Secret holding its environment and
// the worker token for its init container), follows it until the step
// container has terminated, streams its log, and deletes both on every
// path.
func (r *Runner) Run(ctx context.Context, job *runner.Job, out runner.Output) (runner.Exit, error) {
	c, ns, err := r.client()
	if err != nil {
		return runner.Exit{}, fmt.Errorf("Failed to create Kubernetes client: %w", err)
	}
	name := podName(job)
	in := r.input(job, name, ns)
	pod, err := r.buildPod(in)
	if err != nil {
		return runner.Exit{}, err
	}
	ns = pod.Namespace
	secret := name
	log := r.log().With("namespace", ns, "pod", name)
	h, _ := json.Marshal(handle{Kind: runner.Kubernetes, Namespace: ns, Pod: name, Secret: secret})
	out.Started(h)

	// Calls that leave something behind are not cut short by a stop:
	// their answer says what there is to delete.
	bg := context.WithoutCancel(ctx)
	grace := stopGrace(job.Grace)
	// What is ours to delete at the end: both, unless a create found the
	// name taken (someone else's) or a stop already deleted the pod.
	ownPod, ownSecret := true, true
	defer func() {
		p, sec := name, secret
		if !ownPod {
			p = ""
		}
		if !ownSecret {
			sec = ""
		}
		if p == "" && sec == "" {
			return
		}
		dctx, cancel := context.WithTimeout(bg, callTimeout)
		defer cancel()
		if _, err := r.remove(dctx, c, ns, p, sec, grace); err != nil {
			log.Error("deleting the step's pod", "error", err.Error())
		}
	}()

	cctx, cancel := context.WithTimeout(bg, callTimeout)
	_, err = c.createSecret(cctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: ns, Labels: pod.Labels,
			Annotations: map[string]string{AnnotationSpool: job.Key}},
		Type:       corev1.SecretTypeOpaque,
		StringData: secretData(job, r.WorkerToken),
	})
	cancel()
	if err != nil {
		if apierrors.IsAlreadyExists(err) {
			ownPod, ownSecret = false, false
		}
		return runner.Exit{}, fmt.Errorf("Failed to create pod: creating its secret: %w", err)
	}
	cctx, cancel = context.WithTimeout(bg, callTimeout)
	created, err := c.createPod(cctx, pod)
	cancel()
	if err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Names are unique per attempt: the pod of that name is not
			// one this call made.
			ownPod = false
		}
		return runner.Exit{}, fmt.Errorf("Failed to create pod: %w", err)
	}
	log.Info("pod created", "image", in.image)
	cctx, cancel = context.WithTimeout(bg, callTimeout)
	if err := c.ownSecret(cctx, ns, secret, created); err != nil {
		log.Warn("making the pod own its secret; the worker still deletes it", "error", err.Error())
	}
	cancel()

	s := &podRun{r: r, c: c, job: job, out: out, log: log, ns: ns, name: name, rv: created.ResourceVersion}
	exit, err := s.follow(ctx, created)
	if s.stopped {
		ownPod = false // deleted and waited for; the Secret is still to go
	}
	return exit, err
}

// podRun is one pod being followed.
type podRun struct {
	r        *Runner
	c        *client
	job      *runner.Job
	out      runner.Output
	log      *slog.Logger
	ns, name string
	rv       string

	logs    *follower
	stopped bool // deleted after a stop, and gone (or given up on)
}

// event is a pod update from the watch, or its end.
type event struct {
	pod  *corev1.Pod
	gone bool
	err  error
}

// follow waits for the pod's step container to end, applying the
// waiting rules, and stops the pod when ctx ends.
func (s *podRun) follow(ctx context.Context, first *corev1.Pod) (runner.Exit, error) {
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	events := make(chan event)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	wg.Go(func() { s.watch(wctx, events) })
	defer func() {
		if s.logs != nil {
			s.logs.stop()
		}
	}()

	backoffLimit, pendingLimit := BackoffLimit, PendingLimit
	if s.r.backoffLimit > 0 {
		backoffLimit = s.r.backoffLimit
	}
	if s.r.pendingLimit > 0 {
		pendingLimit = s.r.pendingLimit
	}
	var pendingSince, backoffSince time.Time
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	arm := func(now time.Time) {
		var next time.Time
		if !pendingSince.IsZero() {
			next = pendingSince.Add(pendingLimit)
		}
		if !backoffSince.IsZero() && (next.IsZero() || backoffSince.Add(backoffLimit).Before(next)) {
			next = backoffSince.Add(backoffLimit)
		}
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(max(next.Sub(now), 0))
		}
	}

	pod := first
	done := ctx.Done()
	for {
		now := time.Now()
		if pod != nil {
			if exit, end := s.judge(pod, now, &pendingSince, &backoffSince, backoffLimit, pendingLimit); end {
				return s.finish(exit)
			}
			arm(now)
		}
		select {
		case ev := <-events:
			switch {
			case ev.err != nil:
				return runner.Exit{}, fmt.Errorf("Failed to get pod status: %w", ev.err)
			case ev.gone:
				return runner.Exit{}, fmt.Errorf("Failed to get pod status: pod %s/%s was deleted by someone else", s.ns, s.name)
			}
			pod = ev.pod
		case <-timer.C:
			// judge sees the limit passed
		case <-done:
			return s.stop(ctx, events)
		}
	}
}

// judge applies the rules of contract §3.4 to one state of the pod,
// decided by the step container and the init container (a sidecar that
// never exits, or waits for an image, does not hold the step up). It
// starts the log follower once the step container has started.
func (s *podRun) judge(pod *corev1.Pod, now time.Time, pendingSince, backoffSince *time.Time, backoffLimit, pendingLimit time.Duration) (runner.Exit, bool) {
	stepCS := status(pod.Status.ContainerStatuses, stepContainer)
	if stepCS != nil && (stepCS.State.Running != nil || stepCS.State.Terminated != nil) {
		s.startLogs()
	}
	if stepCS != nil && stepCS.State.Terminated != nil {
		t := stepCS.State.Terminated
		s.out.Exited()
		s.drainLogs()
		if t.ExitCode != 0 && t.Reason != "" && t.Reason != "Error" && t.Reason != "Completed" {
			s.line(fmt.Sprintf("Container terminated: %s (exit code %d)", t.Reason, t.ExitCode))
		}
		return runner.Exit{Code: int(t.ExitCode)}, true
	}
	if ics := status(pod.Status.InitContainerStatuses, initContainer); ics != nil && ics.State.Terminated != nil && ics.State.Terminated.ExitCode != 0 {
		code := ics.State.Terminated.ExitCode
		s.initLogs()
		s.line(fmt.Sprintf("Container error: %s exited with code %d (fetching the workspace revision)", initContainer, code))
		return runner.Exit{Code: int(code)}, true
	}
	if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
		// Terminal without the step container ending: evicted, past its
		// deadline, or an init container of an override failed.
		s.line(fmt.Sprintf("Pod %s: %s %s", pod.Status.Phase, pod.Status.Reason, pod.Status.Message))
		s.events(pod)
		return runner.Exit{Code: 1}, true
	}
	if stepCS != nil && stepCS.State.Running != nil {
		*pendingSince, *backoffSince = time.Time{}, time.Time{}
		return runner.Exit{}, false
	}
	// Not started yet: Pending.
	for _, cs := range []*corev1.ContainerStatus{status(pod.Status.InitContainerStatuses, initContainer), stepCS} {
		w := waiting(cs)
		if w == nil {
			continue
		}
		msg := w.Message
		if msg == "" {
			msg = fmt.Sprintf("Container %s waiting: %s", cs.Name, w.Reason)
		}
		if slices.Contains(failFast, w.Reason) {
			s.line(fmt.Sprintf("Container error: %s — %s", w.Reason, msg))
			s.events(pod)
			return runner.Exit{Code: 1}, true
		}
		if slices.Contains(backoff, w.Reason) {
			if backoffSince.IsZero() {
				*backoffSince = now
			}
			if elapsed := now.Sub(*backoffSince); elapsed >= backoffLimit {
				s.line(fmt.Sprintf("Container error: %s after %ds — %s", w.Reason, int(elapsed/time.Second), msg))
				s.events(pod)
				return runner.Exit{Code: 1}, true
			}
			if pendingSince.IsZero() {
				*pendingSince = now
			}
			return runner.Exit{}, false
		}
	}
	*backoffSince = time.Time{}
	if pendingSince.IsZero() {
		*pendingSince = now
	}
	if elapsed := now.Sub(*pendingSince); elapsed >= pendingLimit {
		s.line(fmt.Sprintf("Pod stuck in Pending state for %ds (check events for details: missing volumes, unschedulable, etc.)", int(elapsed/time.Second)))
		s.events(pod)
		return runner.Exit{Code: 1}, true
	}
	return runner.Exit{}, false
}

func status(list []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func waiting(cs *corev1.ContainerStatus) *corev1.ContainerStateWaiting {
	if cs == nil {
		return nil
	}
	return cs.State.Waiting
}

// events puts the pod's warning events (FailedScheduling, FailedMount,
// Failed pulls...) on stderr, after a waiting rule failed the step: they
// say why, where the pod's status does not. Best effort: a worker whose
// Role does not let it list events says nothing more.
func (s *podRun) events(pod *corev1.Pod) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	list, err := s.c.listEvents(ctx, s.ns, s.name, string(pod.UID))
	if err != nil {
		s.log.Debug("listing the pod's events", "error", err.Error())
		return
	}
	seen := map[string]bool{}
	n := 0
	for i := len(list.Items) - 1; i >= 0 && n < maxEvents; i-- {
		ev := &list.Items[i]
		line := fmt.Sprintf("Event: %s: %s", ev.Reason, ev.Message)
		if ev.Type != corev1.EventTypeWarning || seen[line] {
			continue
		}
		seen[line] = true
		n++
		s.out.Line(runner.Stderr, []byte(line))
	}
}

// maxEvents bounds the events quoted for a failed pod, newest first.
const maxEvents = 5

// line is a line of the worker's own about the pod, on stderr.
func (s *podRun) line(msg string) {
	s.log.Warn(msg)
	s.out.Line(runner.Stderr, []byte(msg))
}

func (s *podRun) finish(exit runner.Exit) (runner.Exit, error) {
	s.log.Info("step container finished", "exit_code", exit.Code)
	return exit, nil
}

// stop deletes the pod with the job's grace and waits until it is gone,
// streaming what the step prints meanwhile.
func (s *podRun) stop(ctx context.Context, events <-chan event) (runner.Exit, error) {
	bg := context.WithoutCancel(ctx)
	grace := stopGrace(s.job.Grace)
	s.log.Info("stopping the step: deleting its pod", "grace_secs", *grace)
	dctx, cancel := context.WithTimeout(bg, callTimeout)
	err := s.c.deletePod(dctx, s.ns, s.name, "", grace)
	cancel()
	if err != nil && !apierrors.IsNotFound(err) {
		return runner.Exit{}, fmt.Errorf("deleting pod %s/%s: %w", s.ns, s.name, err)
	}
	s.stopped = true
	exit := runner.Exit{Code: -1}
	limit := time.NewTimer(time.Duration(*grace)*time.Second + goneMargin)
	defer limit.Stop()
	for !apierrors.IsNotFound(err) {
		select {
		case ev := <-events:
			if ev.pod != nil {
				if cs := status(ev.pod.Status.ContainerStatuses, stepContainer); cs != nil && cs.State.Terminated != nil {
					exit.Code = int(cs.State.Terminated.ExitCode)
				}
			}
			if ev.gone || ev.err != nil {
				s.drainLogs()
				s.log.Info("pod gone")
				return exit, nil
			}
		case <-limit.C:
			s.log.Warn("the stopped pod is still there; not waiting any longer")
			return exit, nil
		}
	}
	return exit, nil
}

// watch sends every change of the pod to events until it is deleted, a
// failure repeats maxFailures times, or ctx ends.
func (s *podRun) watch(ctx context.Context, events chan<- event) {
	send := func(ev event) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	failures := 0
	var last error
	retry := func(err error) bool {
		failures++
		last = err
		if failures >= s.r.maxFailures() {
			send(event{err: last})
			return false
		}
		return sleep(ctx, backoffDelay(failures))
	}
	for ctx.Err() == nil {
		if s.rv == "" {
			gctx, cancel := context.WithTimeout(ctx, callTimeout)
			p, err := s.c.getPod(gctx, s.ns, s.name)
			cancel()
			switch {
			case apierrors.IsNotFound(err):
				send(event{gone: true})
				return
			case err != nil:
				if ctx.Err() != nil || !retry(err) {
					return
				}
				continue
			}
			s.rv = p.ResourceVersion
			if !send(event{pod: p}) {
				return
			}
		}
		w, err := s.c.watchPod(ctx, s.ns, s.name, s.rv, watchTimeout)
		if err != nil {
			s.rv = ""
			if ctx.Err() != nil || !retry(err) {
				return
			}
			continue
		}
		gone, ok := s.drainWatch(ctx, w, send)
		w.Stop()
		if gone {
			send(event{gone: true})
			return
		}
		if !ok {
			s.rv = "" // expired: read the pod again
		} else {
			failures = 0
		}
	}
}

// drainWatch forwards a watch's events; ok is false when it ended with
// an error (such as 410 Gone for an expired resourceVersion).
func (s *podRun) drainWatch(ctx context.Context, w watch.Interface, send func(event) bool) (gone, ok bool) {
	for {
		select {
		case <-ctx.Done():
			return false, true
		case ev, open := <-w.ResultChan():
			if !open {
				return false, true
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if p, isPod := ev.Object.(*corev1.Pod); isPod {
					s.rv = p.ResourceVersion
					if !send(event{pod: p}) {
						return false, true
					}
				}
			case watch.Deleted:
				return true, true
			case watch.Error:
				s.log.Debug("pod watch ended", "error", apierrors.FromObject(ev.Object).Error())
				return false, false
			}
		}
	}
}

// backoffDelay is min(2^n, 30) s after n failures in a row (the
// reference worker's reconnect backoff), from 0.5 s.
func backoffDelay(n int) time.Duration {
	d := 500 * time.Millisecond << min(n-1, 6)
	return min(d, 30*time.Second)
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// input is what the step's pod is built from.
func (r *Runner) input(job *runner.Job, name, ns string) podInput {
	in := podInput{job: job, name: name, namespace: ns,
		image:     runner.ContainerImage(job.Step, r.RunnerImage, defaultImage),
		initImage: r.InitImage, startupConfigMap: r.StartupConfigMap}
	if in.initImage == "" {
		in.initImage = DefaultInitImage
	}
	if runner.WithWorkspace(job.Step) {
		in.workspaceURL = workspaceURL(r.ServerURL, job.Step.Workspace, job.Step.Revision)
	}
	if job.Step.TimeoutSecs > 0 {
		in.activeDeadline = int64((time.Duration(job.Step.TimeoutSecs)*time.Second + job.Grace + deadlineMargin) / time.Second)
	}
	return in
}
