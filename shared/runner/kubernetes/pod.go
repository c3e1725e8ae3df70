package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strings"

	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations on every pod (and Secret) the runner creates.
// Label values are sanitized (a for-each step "step[0]" is not a valid
// label value); the raw names are in the annotations.
const (
	LabelApp      = "app"
	AppValue      = "stroem-step"
	LabelJob      = "stroem.io/job-id"
	LabelTask     = "stroem.io/task"
	LabelStep     = "stroem.io/step"
	LabelAttempt  = "stroem.io/attempt"
	LabelWorkerID = "stroem.io/worker-id"
	// LabelHome names the worker home (workspace_dir) that created the
	// pod: Sweep deletes only its own home's leftovers.
	LabelHome = "stroem.io/home"

	AnnotationTask  = "stroem.io/task"
	AnnotationStep  = "stroem.io/step"
	AnnotationSpool = "stroem.io/spool"
	// AnnotationSecret names the pod's Secret.
	AnnotationSecret = "stroem.io/secret"
)

// Container and volume names of the pod (contract §3.3).
const (
	stepContainer = "step"
	initContainer = "workspace-init"
	tokenKey      = "token"
	// DefaultInitImage fetches the workspace: it needs sh, curl and tar
	// with gzip (the reference worker's default).
	DefaultInitImage = "curlimages/curl:latest"
)

// podName is stroem-<job8>-<task>-<step>-<hash8>: readable, and unique per
// attempt (the hash is of the attempt's spool key), so a retry never
// collides with its predecessor still terminating, and two long names
// cut to the same prefix stay apart.
func podName(job *runner.Job) string {
	job8 := runner.LabelValue(job.Step.JobID)
	if len(job8) > 8 {
		job8 = strings.TrimRight(job8[:8], "-")
	}
	sum := sha256.Sum256([]byte(job.Key + "\x00" + job.Step.JobID + "\x00" + job.Step.StepName + "\x00" + job.Attempt))
	suffix := hex.EncodeToString(sum[:4])
	mid := runner.LabelValue(job.Step.TaskName + "-" + job.Step.StepName)
	name := "stroem-" + job8
	// 63 = the name's limit; the suffix and its dash keep their place.
	if room := 63 - len(name) - 1 - len(suffix) - 1; len(mid) > room {
		mid = strings.TrimRight(mid[:room], "-")
	}
	if mid != "" {
		name += "-" + mid
	}
	return name + "-" + suffix
}

// podInput is what the runner needs to build a step's pod.
type podInput struct {
	job              *runner.Job
	name, namespace  string
	image, initImage string
	startupConfigMap string
	workspaceURL     string // "" for no workspace
	activeDeadline   int64  // 0: none
}

func (r *Runner) labels(job *runner.Job) map[string]string {
	l := map[string]string{
		LabelApp:      AppValue,
		LabelJob:      runner.LabelValue(job.Step.JobID),
		LabelStep:     runner.LabelValue(job.Step.StepName),
		LabelAttempt:  runner.LabelValue(job.Attempt),
		LabelWorkerID: runner.LabelValue(job.WorkerID),
	}
	if t := runner.LabelValue(job.Step.TaskName); t != "" {
		l[LabelTask] = t
	}
	if r.Home != "" {
		l[LabelHome] = runner.LabelValue(r.Home)
	}
	for k, v := range l {
		if v == "" {
			delete(l, k)
		}
	}
	return l
}

// workspaceURL is the tarball of the claimed revision (the reference
// worker fetches the workspace's current one).
func workspaceURL(serverURL, ws, revision string) string {
	if ws == "" {
		ws = "default"
	}
	u := strings.TrimRight(serverURL, "/") + "/worker/workspace/" + url.PathEscape(ws) + ".tar.gz"
	if revision != "" {
		u += "?revision=" + url.QueryEscape(revision)
	}
	return u
}

// initScript fetches and unpacks the workspace. The tarball goes to a
// file first, so a failed download fails the container whatever the
// shell's pipefail support.
const initScript = `set -e
curl -sSfL --retry 3 -H "Authorization: Bearer $STROEM_WORKER_TOKEN" -o /workspace/.stroem-workspace.tar.gz "$STROEM_WORKSPACE_URL"
tar xzf /workspace/.stroem-workspace.tar.gz -C /workspace
rm -f /workspace/.stroem-workspace.tar.gz`

// buildPod is the step's pod (contract §3.3), manifest overrides merged.
// Errors are the reference worker's texts.
func (r *Runner) buildPod(in podInput) (*corev1.Pod, error) {
	job := in.job
	withWS := runner.WithWorkspace(job.Step)
	entry, cmd, err := runner.ContainerCommand(job.Step, job.Spec)
	if err != nil {
		return nil, err
	}
	step := corev1.Container{
		Name:       stepContainer,
		Image:      in.image,
		Command:    entry,
		Args:       cmd,
		WorkingDir: runner.ContainerWorkdir(job.Step, job.Spec),
	}
	// Values come from the pod's Secret: a step's environment holds
	// secrets (resolved ref+ values, tokens of the action), and whoever
	// may read pods must not read them.
	for _, kv := range job.Env {
		k, v, _ := strings.Cut(kv, "=")
		if key, ok := envKey(k); ok {
			step.Env = append(step.Env, corev1.EnvVar{Name: k, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: in.name}, Key: key,
			}}})
		} else {
			step.Env = append(step.Env, corev1.EnvVar{Name: k, Value: v})
		}
	}
	if err := resources(&step, job.Spec.Resources.CPU, job.Spec.Resources.Memory); err != nil {
		return nil, err
	}
	pod := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name: in.name, Namespace: in.namespace,
			Labels: r.labels(job),
			Annotations: map[string]string{
				AnnotationStep: job.Step.StepName, AnnotationTask: job.Step.TaskName, AnnotationSpool: job.Key,
				AnnotationSecret: in.name,
			},
		},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever},
	}
	if in.activeDeadline > 0 {
		pod.Spec.ActiveDeadlineSeconds = &in.activeDeadline
	}
	if withWS {
		mount := func(name, path string, ro bool) {
			step.VolumeMounts = append(step.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: path, ReadOnly: ro})
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
		mount("workspace", runner.ContainerWorkspace, false)
		mount("state-vol", runner.ContainerState, true)
		mount("state-out-vol", runner.ContainerStateOut, false)
		mount("global-state-vol", runner.ContainerGlobalState, true)
		mount("global-state-out-vol", runner.ContainerGlobalStateOut, false)
		pod.Spec.InitContainers = []corev1.Container{{
			Name:    initContainer,
			Image:   in.initImage,
			Command: []string{"sh", "-c", initScript},
			Env: []corev1.EnvVar{
				{Name: "STROEM_WORKSPACE_URL", Value: in.workspaceURL},
				{Name: "STROEM_WORKER_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: in.name}, Key: tokenKey,
				}}},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "workspace", MountPath: runner.ContainerWorkspace}},
		}}
		if in.startupConfigMap != "" {
			mode := int32(0o755)
			pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "startup-scripts", VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: in.startupConfigMap}, DefaultMode: &mode},
			}})
			step.VolumeMounts = append(step.VolumeMounts, corev1.VolumeMount{Name: "startup-scripts", MountPath: runner.StartupDir, ReadOnly: true})
			step.Command = runner.StartupPreamble(step.Command, runner.StartupDir)
		}
	}
	pod.Spec.Containers = []corev1.Container{step}
	if len(job.Spec.Manifest) == 0 {
		return pod, nil
	}
	out, err := mergeManifest(pod, job.Spec.Manifest)
	if err != nil {
		return nil, err
	}
	// An override's env value merged into one of ours replaces it, as
	// it would replace a plain value.
	for i := range out.Spec.Containers {
		for j := range out.Spec.Containers[i].Env {
			if ev := &out.Spec.Containers[i].Env[j]; ev.Value != "" && ev.ValueFrom != nil {
				ev.ValueFrom = nil
			}
		}
	}
	// What the runner finds its pod by stays the runner's; the namespace
	// may be overridden, as with the reference worker.
	out.Name = pod.Name
	if out.Namespace == "" {
		out.Namespace = pod.Namespace
	}
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	maps.Copy(out.Labels, pod.Labels)
	maps.Copy(out.Annotations, pod.Annotations)
	return out, nil
}

// envKey is the key of a variable's value in the pod's Secret, when the
// name can be one (a Secret key is [-._a-zA-Z0-9]+); other variables
// keep their value in the pod spec.
func envKey(name string) (string, bool) {
	if name == "" || len(name) > 200 {
		return "", false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", false
		}
	}
	return "env." + name, true
}

// secretData is what the pod's Secret holds: the step's environment and,
// for the workspace download, the worker token.
func secretData(job *runner.Job, token string) map[string]string {
	data := map[string]string{}
	for _, kv := range job.Env {
		k, v, _ := strings.Cut(kv, "=")
		if key, ok := envKey(k); ok {
			data[key] = v
		}
	}
	if runner.WithWorkspace(job.Step) {
		data[tokenKey] = token
	}
	return data
}

// resources sets the action's cpu and memory as requests.
func resources(c *corev1.Container, cpu, mem string) error {
	set := func(name corev1.ResourceName, key, v string) error {
		if v == "" {
			return nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return runner.Errorf("Failed to build run config: resources.%s: %q is not a Kubernetes quantity (e.g. 500m, 2, 512Mi)", key, v)
		}
		if c.Resources.Requests == nil {
			c.Resources.Requests = corev1.ResourceList{}
		}
		c.Resources.Requests[name] = q
		return nil
	}
	return errors.Join(set(corev1.ResourceCPU, "cpu", cpu), set(corev1.ResourceMemory, "memory", mem))
}

// mergeManifest checks the action's manifest overrides and merges them
// into the pod (contract §3.3: the reference worker's rules and texts).
func mergeManifest(pod *corev1.Pod, raw json.RawMessage) (*corev1.Pod, error) {
	var over any
	if err := json.Unmarshal(raw, &over); err != nil {
		return nil, fmt.Errorf("Failed to build pod spec (manifest overrides may contain invalid fields): %w", err)
	}
	if err := validateOverrides(over); err != nil {
		return nil, fmt.Errorf("Failed to build pod spec: Pod manifest override validation failed: %w", err)
	}
	base, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	var merged any
	if err := json.Unmarshal(base, &merged); err != nil {
		return nil, err
	}
	merged = mergeJSON(merged, over)
	data, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	out := &corev1.Pod{}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("Failed to build pod spec (manifest overrides may contain invalid fields): %w", err)
	}
	return out, nil
}

// mergeJSON is the reference worker's merge_json: objects merge key by
// key; arrays whose elements all have a string "name" (both non-empty)
// merge element by name, new names appended; anything else (scalars,
// null, other arrays, mismatched types) is replaced by the override.
func mergeJSON(base, over any) any {
	switch o := over.(type) {
	case map[string]any:
		b, ok := base.(map[string]any)
		if !ok {
			return over
		}
		for k, v := range o {
			b[k] = mergeJSON(b[k], v)
		}
		return b
	case []any:
		b, ok := base.([]any)
		if !ok || !namedArray(b) || !namedArray(o) {
			return over
		}
		for _, item := range o {
			name := item.(map[string]any)["name"].(string)
			found := false
			for i, bi := range b {
				if bi.(map[string]any)["name"] == name {
					b[i] = mergeJSON(bi, item)
					found = true
					break
				}
			}
			if !found {
				b = append(b, item)
			}
		}
		return b
	}
	return over
}

func namedArray(a []any) bool {
	if len(a) == 0 {
		return false
	}
	for _, item := range a {
		m, ok := item.(map[string]any)
		if !ok {
			return false
		}
		if _, ok := m["name"].(string); !ok {
			return false
		}
	}
	return true
}

// validateOverrides refuses what would give a step the node (contract
// §3.3, validate_pod_overrides): host namespaces, hostPath volumes,
// privileged containers, privilege escalation, the Docker socket. Only
// the override is checked, as by the reference worker.
func validateOverrides(over any) error {
	root, _ := over.(map[string]any)
	spec, ok := root["spec"].(map[string]any)
	if !ok {
		return nil
	}
	for _, f := range []string{"hostNetwork", "hostPID", "hostIPC"} {
		if spec[f] == true {
			return fmt.Errorf("Pod manifest override rejected: %s is not allowed", f)
		}
	}
	if vols, ok := spec["volumes"].([]any); ok {
		for _, v := range vols {
			if m, ok := v.(map[string]any); ok {
				if _, ok := m["hostPath"]; ok {
					return errors.New("Pod manifest override rejected: hostPath volumes are not allowed")
				}
			}
		}
	}
	for _, list := range []string{"containers", "initContainers"} {
		cs, _ := spec[list].([]any)
		for _, c := range cs {
			m, _ := c.(map[string]any)
			sc, _ := m["securityContext"].(map[string]any)
			if sc["privileged"] == true {
				return fmt.Errorf("Pod manifest override rejected: privileged containers are not allowed (%s)", list)
			}
			if sc["allowPrivilegeEscalation"] == true {
				return fmt.Errorf("Pod manifest override rejected: allowPrivilegeEscalation is not allowed (%s)", list)
			}
			mounts, _ := m["volumeMounts"].([]any)
			for _, mt := range mounts {
				if mm, _ := mt.(map[string]any); mm["mountPath"] == "/var/run/docker.sock" {
					return fmt.Errorf("Pod manifest override rejected: mounting /var/run/docker.sock is not allowed (%s)", list)
				}
			}
		}
	}
	return nil
}

// defaultImage is the image of a step whose action names none.
const defaultImage = config.DefaultRunnerImage
