package kubetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TimestampFormat is how the kubelet prefixes log lines when asked for
// timestamps=true: RFC 3339 with nanoseconds, always nine digits
// (k8s.io/cri-client/pkg/logs RFC3339NanoFixed). time.RFC3339Nano parses it.
const TimestampFormat = "2006-01-02T15:04:05.000000000Z07:00"

type logKey struct{ ns, pod, container string }

type logEntry struct {
	at   time.Time
	line string
}

// containerLog is one container's log as the kubelet would read it from its
// log file. Guarded by Kubelet.mu.
type containerLog struct {
	entries   []logEntry
	ended     bool          // the container exited: follow streams end
	wake      chan struct{} // closed and replaced on every change
	dropGen   int           // bumped by DropLogStreams
	followers int
	requests  []url.Values
}

func (cl *containerLog) wakeLocked() {
	close(cl.wake)
	cl.wake = make(chan struct{})
}

func (cl *containerLog) endLocked() {
	cl.ended = true
	cl.wakeLocked()
}

func (k *Kubelet) logLocked(ns, pod, container string) *containerLog {
	key := logKey{ns, pod, container}
	cl := k.logs[key]
	if cl == nil {
		cl = &containerLog{wake: make(chan struct{})}
		k.logs[key] = cl
	}
	return cl
}

// Log appends lines to a container's log, stamped with the current time
// (never earlier than the previous line), and wakes follow streams.
// Lines must not contain newlines.
func (k *Kubelet) Log(ns, pod, container string, lines ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cl := k.logLocked(ns, pod, container)
	for _, l := range lines {
		at := time.Now()
		if n := len(cl.entries); n > 0 && at.Before(cl.entries[n-1].at) {
			at = cl.entries[n-1].at
		}
		cl.entries = append(cl.entries, logEntry{at: at, line: l})
	}
	cl.wakeLocked()
}

// LogAt appends one line with a given timestamp, e.g. several lines within
// one second to test a reconnect with sinceTime, which has second
// precision.
func (k *Kubelet) LogAt(ns, pod, container string, at time.Time, line string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	cl := k.logLocked(ns, pod, container)
	cl.entries = append(cl.entries, logEntry{at: at, line: line})
	cl.wakeLocked()
}

// EndLog ends a container's log: open follow streams send what is left and
// end cleanly, as when the container exits. SetContainers does this for
// terminated containers.
func (k *Kubelet) EndLog(ns, pod, container string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked(ns, pod, container).endLocked()
}

// DropLogStreams cuts the kubelet's open follow streams of a container
// mid-way, as a kubelet restart or a network fault would, and returns how
// many it cut. The API server ends its response to the client at that
// point as if the log had ended (it ignores the copy error), so a client
// sees a clean end of stream while the container still runs.
func (k *Kubelet) DropLogStreams(ns, pod, container string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	cl := k.logLocked(ns, pod, container)
	cl.dropGen++
	cl.wakeLocked()
	return cl.followers
}

// WaitLogStreams waits until at least n follow streams of the container are
// open, so that a test knows a client is connected before it writes lines
// or drops the stream.
func (k *Kubelet) WaitLogStreams(ctx context.Context, ns, pod, container string, n int) error {
	for {
		k.mu.Lock()
		cl := k.logLocked(ns, pod, container)
		followers, wake := cl.followers, cl.wake
		k.mu.Unlock()
		if followers >= n {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d log streams of %s/%s/%s (%d open): %w", n, ns, pod, container, followers, ctx.Err())
		case <-k.done:
			return errors.New("kubelet stopped")
		}
	}
}

// LogRequests returns the query parameters of every log request the
// kubelet received for a container (follow, timestamps, sinceTime,
// sinceSeconds, tailLines, limitBytes, previous), as the API server
// forwarded them.
func (k *Kubelet) LogRequests(ns, pod, container string) []url.Values {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]url.Values(nil), k.logLocked(ns, pod, container).requests...)
}

func (k *Kubelet) serveHTTP(w http.ResponseWriter, r *http.Request) {
	// The API server asks for /containerLogs/{namespace}/{pod}/{container}.
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if r.Method != http.MethodGet || len(parts) != 4 || parts[0] != "containerLogs" {
		http.Error(w, "kubetest kubelet serves only GET /containerLogs/{namespace}/{pod}/{container}", http.StatusNotFound)
		return
	}
	k.serveLogs(w, r, parts[1], parts[2], parts[3])
}

// logQuery is the kubelet's reading of the query, with the same
// precedence: sinceSeconds or sinceTime, then tailLines over what is left.
type logQuery struct {
	follow, timestamps, previous bool
	since                        time.Time
	tail                         int // -1: all
	limit                        int // -1: no limit
}

func parseLogQuery(q url.Values) (logQuery, error) {
	lq := logQuery{tail: -1, limit: -1}
	var err error
	boolean := func(name string) bool {
		v := q.Get(name)
		if v == "" {
			return false
		}
		b, e := strconv.ParseBool(v)
		if e != nil && err == nil {
			err = fmt.Errorf("%s: %w", name, e)
		}
		return b
	}
	integer := func(name string, dflt int) int {
		v := q.Get(name)
		if v == "" {
			return dflt
		}
		n, e := strconv.Atoi(v)
		if e != nil && err == nil {
			err = fmt.Errorf("%s: %w", name, e)
		}
		return n
	}
	lq.follow, lq.timestamps, lq.previous = boolean("follow"), boolean("timestamps"), boolean("previous")
	lq.tail, lq.limit = integer("tailLines", -1), integer("limitBytes", -1)
	if s := integer("sinceSeconds", 0); s > 0 {
		lq.since = time.Now().Add(-time.Duration(s) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		t, e := time.Parse(time.RFC3339, v)
		if e != nil && err == nil {
			err = fmt.Errorf("sinceTime: %w", e)
		}
		lq.since = t
	}
	return lq, err
}

func (k *Kubelet) serveLogs(w http.ResponseWriter, r *http.Request, ns, podName, container string) {
	k.mu.Lock()
	cl := k.logLocked(ns, podName, container)
	cl.requests = append(cl.requests, r.URL.Query())
	k.mu.Unlock()

	lq, err := parseLogQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// Like the kubelet, refuse logs of a container that never started; ask
	// the API server, which is where the test put the state.
	pod, err := k.client.CoreV1().Pods(ns).Get(r.Context(), podName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) || (err == nil && pod.Spec.NodeName != k.node) {
		http.Error(w, fmt.Sprintf("pod %q not found", podName), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if msg := logStatusError(pod, container, lq.previous); msg != "" {
		// No trailing newline (unlike http.Error): the API server passes
		// the body on as the error message.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, msg)
		return
	}

	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	k.mu.Lock()
	// The log may have been replaced (pod deleted and recreated) meanwhile.
	cl = k.logLocked(ns, podName, container)
	gen := cl.dropGen
	if lq.follow {
		cl.followers++
		cl.wakeLocked()
		defer func() {
			k.mu.Lock()
			cl.followers--
			cl.wakeLocked()
			k.mu.Unlock()
		}()
	}
	k.mu.Unlock()

	next, first, written := 0, true, 0
	for {
		k.mu.Lock()
		var batch []logEntry
		for _, e := range cl.entries[next:] {
			if !e.at.Before(lq.since) { // since is inclusive, as in the kubelet
				batch = append(batch, e)
			}
		}
		next = len(cl.entries)
		ended, dropped, wake := cl.ended, cl.dropGen != gen, cl.wake
		k.mu.Unlock()
		if first && lq.tail >= 0 && len(batch) > lq.tail {
			batch = batch[len(batch)-lq.tail:]
		}
		first = false
		for _, e := range batch {
			line := e.line + "\n"
			if lq.timestamps {
				line = e.at.UTC().Format(TimestampFormat) + " " + line
			}
			if lq.limit >= 0 && written+len(line) > lq.limit {
				line = line[:lq.limit-written]
			}
			n, err := w.Write([]byte(line))
			written += n
			if err != nil {
				return
			}
			if lq.limit >= 0 && written >= lq.limit {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		if dropped {
			// Abort the connection instead of ending the response.
			panic(http.ErrAbortHandler)
		}
		if !lq.follow || ended {
			return
		}
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		case <-k.done:
			return
		}
	}
}

// logStatusError is the kubelet's refusal (validateContainerLogStatus) for
// a container without logs, or "" when logs can be read.
func logStatusError(pod *corev1.Pod, container string, previous bool) string {
	var cs *corev1.ContainerStatus
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for i := range list {
			if list[i].Name == container {
				cs = &list[i]
			}
		}
	}
	if cs == nil {
		return fmt.Sprintf("container %q in pod %q is not available", container, pod.Name)
	}
	switch {
	case previous:
		if cs.LastTerminationState.Terminated == nil {
			return fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod.Name)
		}
	case cs.State.Running != nil, cs.State.Terminated != nil, cs.LastTerminationState.Terminated != nil:
	case cs.State.Waiting != nil:
		switch cs.State.Waiting.Reason {
		case "ErrImagePull":
			return fmt.Sprintf("container %q in pod %q is waiting to start: image can't be pulled", container, pod.Name)
		case "ImagePullBackOff":
			return fmt.Sprintf("container %q in pod %q is waiting to start: trying and failing to pull image", container, pod.Name)
		}
		return fmt.Sprintf("container %q in pod %q is waiting to start: %s", container, pod.Name, cs.State.Waiting.Reason)
	default:
		return fmt.Sprintf("container %q in pod %q is waiting to start - no logs yet", container, pod.Name)
	}
	return ""
}
