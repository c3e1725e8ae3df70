package kubetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Waiting is a container state as the kubelet reports it while a container
// is not running: reason is e.g. ContainerCreating, PodInitializing,
// ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
// CreateContainerConfigError, InvalidImageName.
func Waiting(reason, message string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
}

// Running is the state of a container started now.
func Running() corev1.ContainerState {
	return corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
}

// Terminated is the state of a container that exited with exitCode; an
// empty reason becomes Completed for 0 and Error otherwise, as the kubelet
// reports (OOMKilled, DeadlineExceeded and so on must be given).
func Terminated(exitCode int32, reason string) corev1.ContainerState {
	if reason == "" {
		reason = "Error"
		if exitCode == 0 {
			reason = "Completed"
		}
	}
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: exitCode, Reason: reason, FinishedAt: metav1.Now(),
	}}
}

// SetContainer sets the state of one container (init or regular, found by
// name in the spec); see SetContainers.
func (k *Kubelet) SetContainer(ctx context.Context, ns, pod, container string, state corev1.ContainerState) (*corev1.Pod, error) {
	return k.SetContainers(ctx, ns, pod, map[string]corev1.ContainerState{container: state})
}

// SetContainers sets the states of containers in one status update, fills
// in what the kubelet would (image, container ID, ready, started, start
// and finish times, start time, host IP), derives the pod phase and
// conditions from all container states as the kubelet does for
// restartPolicy Never, and ends the log of containers that terminated (so
// follow streams end, as they do when a container exits). Other
// containers keep their state: a step container can terminate while a
// sidecar keeps running, which leaves the pod Running.
//
// The API server refuses a terminated container going back to running
// (restartPolicy Never) and a terminal phase going back.
func (k *Kubelet) SetContainers(ctx context.Context, ns, pod string, states map[string]corev1.ContainerState) (*corev1.Pod, error) {
	out, err := k.UpdateStatus(ctx, ns, pod, func(p *corev1.Pod) error {
		for _, name := range slices.Sorted(maps.Keys(states)) {
			if err := setContainerState(p, name, states[name]); err != nil {
				return err
			}
		}
		p.Status.Phase = podPhase(p)
		fillPodStatus(p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for name, st := range states {
		if st.Terminated != nil {
			k.EndLog(ns, pod, name)
		}
	}
	return out, nil
}

// SetPhase sets the pod phase (and reason and message) directly, for
// states the containers do not explain: Failed with reason Evicted or
// DeadlineExceeded, Unknown, or Pending before any container status.
func (k *Kubelet) SetPhase(ctx context.Context, ns, pod string, phase corev1.PodPhase, reason, message string) (*corev1.Pod, error) {
	return k.UpdateStatus(ctx, ns, pod, func(p *corev1.Pod) error {
		p.Status.Phase = phase
		p.Status.Reason = reason
		p.Status.Message = message
		fillPodStatus(p)
		return nil
	})
}

// RunPod is the common path from Pending to Running in one update: init
// containers Completed (exit 0), every container running.
func (k *Kubelet) RunPod(ctx context.Context, ns, pod string) (*corev1.Pod, error) {
	p, err := k.client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("getting pod %s/%s: %w", ns, pod, err)
	}
	states := map[string]corev1.ContainerState{}
	for _, c := range p.Spec.InitContainers {
		states[c.Name] = Terminated(0, "")
	}
	for _, c := range p.Spec.Containers {
		states[c.Name] = Running()
	}
	return k.SetContainers(ctx, ns, pod, states)
}

func setContainerState(p *corev1.Pod, name string, state corev1.ContainerState) error {
	var spec *corev1.Container
	statuses := &p.Status.ContainerStatuses
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == name {
			spec, statuses = &p.Spec.InitContainers[i], &p.Status.InitContainerStatuses
		}
	}
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			spec = &p.Spec.Containers[i]
		}
	}
	if spec == nil {
		return fmt.Errorf("pod %s/%s has no container %q", p.Namespace, p.Name, name)
	}
	i := slices.IndexFunc(*statuses, func(cs corev1.ContainerStatus) bool { return cs.Name == name })
	if i < 0 {
		*statuses = append(*statuses, corev1.ContainerStatus{Name: name})
		i = len(*statuses) - 1
	}
	cs := &(*statuses)[i]
	cs.Image = spec.Image
	id := fmt.Sprintf("kubetest://%s/%s/%s", p.Namespace, p.Name, name)
	switch {
	case state.Running != nil:
		cs.ContainerID, cs.ImageID = id, "kubetest://"+spec.Image
	case state.Terminated != nil:
		cs.ContainerID, cs.ImageID = id, "kubetest://"+spec.Image
		t := *state.Terminated
		if t.ContainerID == "" {
			t.ContainerID = id
		}
		if t.StartedAt.IsZero() && cs.State.Running != nil {
			t.StartedAt = cs.State.Running.StartedAt
		}
		state.Terminated = &t
	}
	cs.State = state
	cs.Ready = state.Running != nil
	cs.Started = ptr(state.Running != nil)
	// Keep the kubelet's ordering: statuses in spec order.
	order := func(list []corev1.Container) {
		slices.SortStableFunc(*statuses, func(a, b corev1.ContainerStatus) int {
			return indexOf(list, a.Name) - indexOf(list, b.Name)
		})
	}
	if statuses == &p.Status.InitContainerStatuses {
		order(p.Spec.InitContainers)
	} else {
		order(p.Spec.Containers)
	}
	return nil
}

func indexOf(list []corev1.Container, name string) int {
	return slices.IndexFunc(list, func(c corev1.Container) bool { return c.Name == name })
}

// podPhase is the kubelet's getPhase for restartPolicy Never (and, close
// enough, OnFailure) without sidecar init containers.
func podPhase(p *corev1.Pod) corev1.PodPhase {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return p.Status.Phase // terminal phases never change
	}
	status := func(list []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
		if i := slices.IndexFunc(list, func(cs corev1.ContainerStatus) bool { return cs.Name == name }); i >= 0 {
			return &list[i]
		}
		return nil
	}
	initPending := false
	for _, c := range p.Spec.InitContainers {
		cs := status(p.Status.InitContainerStatuses, c.Name)
		switch {
		case cs == nil || cs.State.Terminated == nil:
			initPending = true
		case cs.State.Terminated.ExitCode != 0:
			if p.Spec.RestartPolicy == corev1.RestartPolicyNever {
				return corev1.PodFailed
			}
			initPending = true
		}
	}
	if initPending {
		return corev1.PodPending
	}
	var waiting, running, stopped, succeeded int
	for _, c := range p.Spec.Containers {
		cs := status(p.Status.ContainerStatuses, c.Name)
		switch {
		case cs == nil || cs.State.Waiting != nil:
			waiting++
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped == succeeded:
		return corev1.PodSucceeded
	}
	return corev1.PodFailed
}

// fillPodStatus sets what a kubelet sets once it runs a pod: start time,
// host IP, and the Initialized, ContainersReady and Ready conditions.
func fillPodStatus(p *corev1.Pod) {
	if p.Status.StartTime == nil {
		p.Status.StartTime = ptr(metav1.Now())
	}
	if p.Status.HostIP == "" {
		p.Status.HostIP = "127.0.0.1"
		p.Status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	}
	setConditions(p)
}

func setConditions(p *corev1.Pod) {
	initialized := true
	for _, c := range p.Spec.InitContainers {
		i := slices.IndexFunc(p.Status.InitContainerStatuses, func(cs corev1.ContainerStatus) bool { return cs.Name == c.Name })
		if i < 0 || p.Status.InitContainerStatuses[i].State.Terminated == nil || p.Status.InitContainerStatuses[i].State.Terminated.ExitCode != 0 {
			initialized = false
		}
	}
	ready := len(p.Spec.Containers) > 0
	for _, c := range p.Spec.Containers {
		i := slices.IndexFunc(p.Status.ContainerStatuses, func(cs corev1.ContainerStatus) bool { return cs.Name == c.Name })
		if i < 0 || !p.Status.ContainerStatuses[i].Ready {
			ready = false
		}
	}
	setCondition(p, corev1.PodInitialized, initialized)
	setCondition(p, corev1.ContainersReady, ready)
	setCondition(p, corev1.PodReady, ready)
}

func setCondition(p *corev1.Pod, typ corev1.PodConditionType, ok bool) {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	now := metav1.NewTime(time.Now())
	for i := range p.Status.Conditions {
		c := &p.Status.Conditions[i]
		if c.Type == typ {
			if c.Status != status {
				c.Status, c.LastTransitionTime = status, now
			}
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: typ, Status: status, LastTransitionTime: now})
}
