package main

// Checks of the deploy examples with the real tools of each kind of
// system: systemd-analyze, a cron-expression parser, an HCL parser with
// Nomad's job structure, and a Docker engine. A test whose tool is not
// installed skips and says which package brings it.

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/robfig/cron/v3"
	"github.com/zclconf/go-cty/cty"
	"gopkg.in/yaml.v3"
)

// workerUID is the user the image, the Kubernetes pods and the Nomad and
// systemd examples run the worker as (uid 10001 in the image).
const workerUID = 10001

var (
	builtWorkerOnce sync.Once
	builtWorker     string
	builtWorkerErr  error
)

// buildWorker builds the static binary the way scripts/deploy builds it
// (CGO_ENABLED=0, -trimpath), once per test process.
func buildWorker(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: the go command is not on PATH to build the binary")
	}
	builtWorkerOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stroem-worker-bin-")
		if err != nil {
			builtWorkerErr = err
			return
		}
		builtWorker = filepath.Join(dir, "stroem-worker")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", builtWorker, "./cmd/stroem-worker")
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			builtWorkerErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if builtWorkerErr != nil {
		t.Fatal(builtWorkerErr)
	}
	return builtWorker
}

func readDeploy(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDeploySystemdVerify runs `systemd-analyze verify` on the units, in a
// root that has the binary at the path ExecStart names.
func TestDeploySystemdVerify(t *testing.T) {
	t.Parallel()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("skipping: systemd-analyze not installed (Debian package systemd)")
	}
	units, _ := filepath.Glob(filepath.Join(deployDir, "*.service"))
	timers, _ := filepath.Glob(filepath.Join(deployDir, "*.timer"))
	units = append(units, timers...)
	if len(units) < 3 {
		t.Fatalf("found %d systemd units, want at least 3", len(units))
	}
	bin := buildWorker(t)
	root := t.TempDir()
	for _, d := range []string{"usr/local/bin", "etc/systemd/system", "usr/lib/systemd"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(bin, filepath.Join(root, "usr/local/bin/stroem-worker"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The units depend on targets (network-online, timers, multi-user)
	// that verify loads from the root: give it the host's.
	for _, dir := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(dir, "sysinit.target")); err == nil {
			if out, err := exec.Command("cp", "-a", dir, filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
				t.Fatalf("copying %s: %v\n%s", dir, err, out)
			}
			break
		}
	}
	var args []string
	for _, u := range units {
		dst := filepath.Join(root, "etc/systemd/system", filepath.Base(u))
		if err := copyFile(u, dst, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, dst)
	}
	cmd := exec.Command(analyze, append([]string{"verify", "--man=false", "--root=" + root}, args...)...)
	out, err := cmd.CombinedOutput()
	// verify exits 0 on warnings such as an unknown key: any output fails.
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// What verify accepts but does nothing: Persistent= without OnCalendar=,
	// and a oneshot whose default 90 s start timeout would kill a step.
	for _, u := range units {
		text := readDeploy(t, filepath.Base(u))
		if regexp.MustCompile(`(?m)^Persistent=(true|yes|1)`).MatchString(text) && !strings.Contains(text, "\nOnCalendar=") {
			t.Errorf("%s: Persistent=true without OnCalendar= has no effect", filepath.Base(u))
		}
		if strings.Contains(text, "\nType=oneshot") {
			m := regexp.MustCompile(`(?m)^TimeoutStartSec=(.+)$`).FindStringSubmatch(text)
			if m == nil {
				t.Errorf("%s: Type=oneshot without TimeoutStartSec: the default 90 s bounds the whole run", filepath.Base(u))
				continue
			}
			limit := systemdSpan(t, m[1])
			dl := regexp.MustCompile(`(?m)^ExecStart=.*--deadline (\S+)`).FindStringSubmatch(text)
			if dl == nil {
				t.Errorf("%s: a oneshot run should have --deadline under TimeoutStartSec", filepath.Base(u))
				continue
			}
			d, err := time.ParseDuration(dl[1])
			if err != nil || d >= limit {
				t.Errorf("%s: --deadline %s is not under TimeoutStartSec=%s", filepath.Base(u), dl[1], m[1])
			}
		}
	}
}

// systemdSpan parses the time spans the units use ("1h 1min", "90").
func systemdSpan(t *testing.T, s string) time.Duration {
	t.Helper()
	r := strings.NewReplacer("min", "m", " ", "")
	s = r.Replace(strings.TrimSpace(s))
	if _, err := strconv.Atoi(s); err == nil {
		s += "s"
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("time span %q: %v", s, err)
	}
	return d
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

// TestDeployCronFile parses the /etc/cron.d file: environment lines, the
// five schedule fields (robfig/cron), the user field, and a command whose
// paths the stroem user can write.
func TestDeployCronFile(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob(filepath.Join(deployDir, "cron*"))
	if len(files) != 1 {
		t.Fatalf("cron examples = %v, want one", files)
	}
	name := filepath.Base(files[0])
	if strings.Contains(strings.TrimPrefix(name, "cron.d-"), ".") {
		t.Errorf("%s: installed under /etc/cron.d a name with a dot is ignored by cron", name)
	}
	text := readDeploy(t, name)
	if !strings.Contains(text, "/etc/cron.d") {
		t.Errorf("%s does not say it is an /etc/cron.d file", name)
	}
	env := map[string]string{}
	jobs := 0
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if m := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(.*)$`).FindStringSubmatch(line); m != nil {
			env[m[1]] = m[2]
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 7 {
			t.Errorf("%s:%d: want 5 schedule fields, a user and a command: %q", name, i+1, line)
			continue
		}
		jobs++
		spec := strings.Join(fields[:5], " ")
		if _, err := cron.ParseStandard(spec); err != nil {
			t.Errorf("%s:%d: schedule %q: %v", name, i+1, spec, err)
		}
		if user := fields[5]; user != "stroem" {
			t.Errorf("%s:%d: user field = %q, want stroem", name, i+1, user)
		}
		cmd := strings.Join(fields[6:], " ")
		// Every absolute path the command writes must be under the
		// workspace directory, which the file says to create for stroem.
		for _, m := range regexp.MustCompile(`(?:>>?|flock -n)\s*(/\S+)`).FindAllStringSubmatch(cmd, -1) {
			if !strings.HasPrefix(m[1], "/var/lib/stroem-worker/") {
				t.Errorf("%s:%d: writes %s, which the stroem user cannot create", name, i+1, m[1])
			}
		}
		if strings.Contains(cmd, "/var/log/") {
			t.Errorf("%s:%d: /var/log is not writable by the stroem user", name, i+1)
		}
		for _, tool := range []string{"flock", "timeout", "logger"} {
			if strings.Contains(cmd, tool+" ") {
				if _, err := exec.LookPath(tool); err != nil {
					t.Logf("%s not installed here; not checking it exists", tool)
				}
			}
		}
	}
	if jobs != 1 {
		t.Errorf("%s: %d job lines, want 1", name, jobs)
	}
	if env["STROEM__WORKSPACE_DIR"] != "/var/lib/stroem-worker" {
		t.Errorf("%s: STROEM__WORKSPACE_DIR = %q, want the directory the lock lives in", name, env["STROEM__WORKSPACE_DIR"])
	}
	if !strings.Contains(text, "install -d -o stroem -g stroem") {
		t.Errorf("%s: does not say how to create the workspace directory for stroem", name)
	}
}

// The part of Nomad's job specification the examples use. gohcl rejects
// any argument or block not declared here, so a typo or a key in the wrong
// block fails.
type nomadFile struct {
	Job nomadJob `hcl:"job,block"`
}

type nomadJob struct {
	Name     string         `hcl:"name,label"`
	Type     string         `hcl:"type"`
	Periodic *nomadPeriodic `hcl:"periodic,block"`
	Groups   []nomadGroup   `hcl:"group,block"`
}

type nomadPeriodic struct {
	Crons           []string `hcl:"crons"`
	ProhibitOverlap bool     `hcl:"prohibit_overlap,optional"`
}

type nomadGroup struct {
	Name       string         `hcl:"name,label"`
	Count      *int           `hcl:"count,optional"`
	Network    *nomadNetwork  `hcl:"network,block"`
	Services   []nomadService `hcl:"service,block"`
	Restart    *nomadRestart  `hcl:"restart,block"`
	Reschedule *nomadSchedule `hcl:"reschedule,block"`
	Tasks      []nomadTask    `hcl:"task,block"`
}

type nomadNetwork struct {
	Mode  string      `hcl:"mode,optional"`
	Ports []nomadPort `hcl:"port,block"`
}

type nomadPort struct {
	Label  string `hcl:"label,label"`
	Static *int   `hcl:"static,optional"`
	To     *int   `hcl:"to,optional"`
}

type nomadService struct {
	Name     string       `hcl:"name"`
	Provider string       `hcl:"provider,optional"`
	Port     string       `hcl:"port"`
	Checks   []nomadCheck `hcl:"check,block"`
}

type nomadCheck struct {
	Type     string `hcl:"type"`
	Path     string `hcl:"path,optional"`
	Interval string `hcl:"interval"`
	Timeout  string `hcl:"timeout"`
}

type nomadRestart struct {
	Attempts int    `hcl:"attempts"`
	Delay    string `hcl:"delay"`
	Interval string `hcl:"interval"`
	Mode     string `hcl:"mode"`
}

type nomadSchedule struct {
	Attempts  int  `hcl:"attempts"`
	Unlimited bool `hcl:"unlimited"`
}

type nomadTask struct {
	Name        string          `hcl:"name,label"`
	Driver      string          `hcl:"driver"`
	KillSignal  string          `hcl:"kill_signal,optional"`
	KillTimeout string          `hcl:"kill_timeout,optional"`
	Config      nomadExecConfig `hcl:"config,block"`
	Env         nomadEnv        `hcl:"env,block"`
	Templates   []nomadTemplate `hcl:"template,block"`
	Services    []nomadService  `hcl:"service,block"`
	Restart     *nomadRestart   `hcl:"restart,block"`
}

// nomadExecConfig is the exec driver's config block.
type nomadExecConfig struct {
	Command string   `hcl:"command"`
	Args    []string `hcl:"args,optional"`
}

// nomadEnv is the env block: any names, string values.
type nomadEnv struct {
	Vars map[string]string `hcl:",remain"`
}

type nomadTemplate struct {
	Data        string `hcl:"data"`
	Destination string `hcl:"destination"`
}

// nomadRuntimeVar is what Nomad interpolates at run time: ${NOMAD_*},
// ${node.*}, ${attr.*}, ${meta.*}.
var nomadRuntimeVar = regexp.MustCompile(`^(NOMAD_[A-Z_]+[A-Za-z0-9_]*|node\.(unique\.name|unique\.id|datacenter|region|class)|attr\..+|meta\..+)$`)

// TestDeployNomadJobs parses the Nomad job files with HCL 2 against the
// job structure above, keeping ${...} runtime interpolations as Nomad
// does, and checks what the driver and ACLs need.
func TestDeployNomadJobs(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob(filepath.Join(deployDir, "*.nomad.hcl"))
	if len(files) != 2 {
		t.Fatalf("nomad examples = %v, want 2", files)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			job := parseNomad(t, f)
			if job.Type != "service" && job.Type != "batch" {
				t.Errorf("job type = %q", job.Type)
			}
			for _, g := range job.Groups {
				ports := map[string]nomadPort{}
				if g.Network != nil {
					for _, p := range g.Network.Ports {
						ports[p.Label] = p
					}
				}
				services := g.Services
				for _, task := range g.Tasks {
					checkNomadTask(t, job, g, task, ports)
					services = append(services, task.Services...)
				}
				for _, s := range services {
					p, ok := ports[s.Port]
					if !ok {
						t.Errorf("service %s: port %q is not in the group's network block", s.Name, s.Port)
					}
					if s.Provider != "nomad" {
						t.Errorf("service %s: provider %q needs Consul on every client; use nomad", s.Name, s.Provider)
					}
					if g.Count != nil && *g.Count > 1 && p.Static != nil {
						t.Errorf("service %s: static port with count %d collides on one node", s.Name, *g.Count)
					}
				}
			}
			if job.Type == "batch" && job.Periodic == nil {
				t.Errorf("batch example is not periodic")
			}
			if job.Periodic != nil {
				for _, c := range job.Periodic.Crons {
					if _, err := cron.ParseStandard(c); err != nil {
						t.Errorf("periodic cron %q: %v", c, err)
					}
				}
			}
		})
	}
}

func checkNomadTask(t *testing.T, job nomadJob, g nomadGroup, task nomadTask, ports map[string]nomadPort) {
	t.Helper()
	if task.Driver != "exec" {
		t.Errorf("task %s: driver %q, the examples use exec", task.Name, task.Driver)
	}
	// The exec driver shares the host's network: `to` maps nothing and
	// the worker must listen on the allocated host port.
	for label, p := range ports {
		if p.To != nil && (g.Network.Mode == "" || g.Network.Mode == "host") {
			t.Errorf("port %q: `to` has no effect with the exec driver in host network mode", label)
		}
	}
	args := strings.Join(task.Config.Args, " ")
	for _, s := range append(g.Services, task.Services...) {
		want := "--listen ${NOMAD_ADDR_" + s.Port + "}"
		if !strings.Contains(args, want) {
			t.Errorf("task %s: args %q do not listen where service %s checks (%s)", task.Name, args, s.Name, want)
		}
	}
	// The implicit workload ACL lets a task read nomad/jobs/<job>[/...].
	for _, tpl := range task.Templates {
		for _, m := range regexp.MustCompile(`nomadVar \\?"([^"\\]+)`).FindAllStringSubmatch(tpl.Data, -1) {
			scope := "nomad/jobs/" + job.Name
			if m[1] != scope && !strings.HasPrefix(m[1], scope+"/") {
				t.Errorf("task %s: variable %s is outside the job's implicit ACL scope %s", task.Name, m[1], scope)
			}
		}
		if tpl.Destination != task.Env.Vars["STROEM__WORKER_TOKEN_FILE"] {
			t.Errorf("task %s: template writes %s, STROEM__WORKER_TOKEN_FILE is %s", task.Name, tpl.Destination, task.Env.Vars["STROEM__WORKER_TOKEN_FILE"])
		}
	}
	// The exec driver's chroot has no /var/tmp (the default workspace).
	if ws := task.Env.Vars["STROEM__WORKSPACE_DIR"]; !strings.HasPrefix(ws, "${NOMAD_TASK_DIR}") && !strings.HasPrefix(ws, "${NOMAD_ALLOC_DIR}") {
		t.Errorf("task %s: STROEM__WORKSPACE_DIR = %q, want a directory inside the task's chroot", task.Name, ws)
	}
}

// parseNomad decodes a job file. Nomad leaves ${NOMAD_*} and ${node.*}
// for the client to fill in; to decode, each such reference evaluates to
// its own text, and any other variable is an error.
func parseNomad(t *testing.T, path string) nomadJob {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	file, diags := hclsyntax.ParseConfig(src, filepath.Base(path), hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		t.Fatalf("parsing: %s", diags)
	}
	vars := map[string]cty.Value{}
	nested := map[string]map[string]any{}
	diags = hclsyntax.VisitAll(file.Body.(*hclsyntax.Body), func(n hclsyntax.Node) hcl.Diagnostics {
		expr, ok := n.(hclsyntax.Expression)
		if !ok {
			return nil
		}
		for _, tr := range expr.Variables() {
			var parts []string
			for _, step := range tr {
				switch s := step.(type) {
				case hcl.TraverseRoot:
					parts = append(parts, s.Name)
				case hcl.TraverseAttr:
					parts = append(parts, s.Name)
				}
			}
			full := strings.Join(parts, ".")
			if !nomadRuntimeVar.MatchString(full) {
				r := tr.SourceRange()
				t.Errorf("%s: ${%s} is not a Nomad runtime variable", r, full)
				continue
			}
			if len(parts) == 1 {
				vars[full] = cty.StringVal("${" + full + "}")
				continue
			}
			m := nested[parts[0]]
			if m == nil {
				m = map[string]any{}
				nested[parts[0]] = m
			}
			for _, p := range parts[1 : len(parts)-1] {
				next, _ := m[p].(map[string]any)
				if next == nil {
					next = map[string]any{}
					m[p] = next
				}
				m = next
			}
			m[parts[len(parts)-1]] = "${" + full + "}"
		}
		return nil
	})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for root, m := range nested {
		vars[root] = toCty(m)
	}
	var out nomadFile
	if diags := gohcl.DecodeBody(file.Body, &hcl.EvalContext{Variables: vars}, &out); diags.HasErrors() {
		t.Fatalf("decoding as a Nomad job: %s", diags)
	}
	return out.Job
}

func toCty(v any) cty.Value {
	switch v := v.(type) {
	case string:
		return cty.StringVal(v)
	case map[string]any:
		m := map[string]cty.Value{}
		for k, e := range v {
			m[k] = toCty(e)
		}
		return cty.ObjectVal(m)
	}
	panic(fmt.Sprintf("toCty(%T)", v))
}

// TestDeployKubernetesManifests checks what a parse cannot: the pods run
// as the image's user and can read the token and write their volumes, and
// a ReadWriteOnce volume is never shared by overlapping CronJob pods.
// (Server-side validation against a kube-apiserver is a separate check.)
func TestDeployKubernetesManifests(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob(filepath.Join(deployDir, "kubernetes-*.yaml"))
	if len(files) != 3 {
		t.Fatalf("kubernetes examples = %v, want 3", files)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			docs := yamlDocs(t, f)
			claims := map[string]string{} // PVC name -> access mode
			for _, d := range docs {
				if d["kind"] == "PersistentVolumeClaim" {
					modes, _ := dig(d, "spec", "accessModes").([]any)
					if len(modes) > 0 {
						claims[dig(d, "metadata", "name").(string)] = fmt.Sprint(modes[0])
					}
				}
			}
			pods := 0
			for _, d := range docs {
				var pod map[string]any
				switch d["kind"] {
				case "Deployment":
					pod, _ = dig(d, "spec", "template", "spec").(map[string]any)
				case "CronJob":
					pod, _ = dig(d, "spec", "jobTemplate", "spec", "template", "spec").(map[string]any)
				default:
					continue
				}
				pods++
				checkPodSpec(t, pod)
				for _, v := range asList(pod["volumes"]) {
					claim, ok := dig(v, "persistentVolumeClaim", "claimName").(string)
					if !ok {
						continue
					}
					mode, defined := claims[claim]
					if !defined {
						t.Errorf("volume uses PVC %s, which the file does not define", claim)
					}
					// An undefined claim is most likely ReadWriteOnce too.
					if d["kind"] == "CronJob" && (mode == "ReadWriteOnce" || !defined) && dig(d, "spec", "concurrencyPolicy") != "Forbid" {
						t.Errorf("CronJob shares ReadWriteOnce PVC %s but concurrencyPolicy = %v, want Forbid", claim, dig(d, "spec", "concurrencyPolicy"))
					}
				}
			}
			if want := 1; pods != want && name != "kubernetes-rbac.yaml" {
				t.Errorf("found %d pod templates, want %d", pods, want)
			}
		})
	}
}

func checkPodSpec(t *testing.T, pod map[string]any) {
	t.Helper()
	sc, _ := pod["securityContext"].(map[string]any)
	if sc["runAsUser"] != workerUID {
		t.Errorf("runAsUser = %v, want %d (the image's USER)", sc["runAsUser"], workerUID)
	}
	gid, _ := sc["fsGroup"].(int)
	if gid == 0 {
		t.Errorf("no fsGroup: the Secret's files and the volumes stay root's")
	}
	for _, v := range asList(pod["volumes"]) {
		if dig(v, "secret") == nil {
			continue
		}
		mode, _ := dig(v, "secret", "defaultMode").(int)
		// The file is root:fsGroup; uid 10001 reads it through the group.
		if mode&0o040 == 0 {
			t.Errorf("secret volume %v: defaultMode %#o is not readable by group %d", v["name"], mode, gid)
		}
		if mode&0o007 != 0 || mode > 0o777 {
			t.Errorf("secret volume %v: defaultMode %#o, want no access for others (0440)", v["name"], mode)
		}
	}
	mounts := map[string]bool{}
	for _, c := range asList(pod["containers"]) {
		for _, m := range asList(c["volumeMounts"]) {
			mounts[m["mountPath"].(string)] = true
		}
		if dig(c, "securityContext", "readOnlyRootFilesystem") == true {
			for _, p := range []string{"/tmp", "/var/lib/stroem-worker"} {
				if !mounts[p] {
					t.Errorf("container %v: read-only root file system and no volume at %s", c["name"], p)
				}
			}
		}
		for _, e := range asList(c["env"]) {
			if e["name"] == "STROEM__WORKER_TOKEN_FILE" {
				dir := filepath.Dir(e["value"].(string))
				if !mounts[dir] {
					t.Errorf("STROEM__WORKER_TOKEN_FILE %v is not in a mounted volume", e["value"])
				}
			}
		}
	}
}

func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var d map[string]any
		if err := dec.Decode(&d); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", filepath.Base(path), err)
		}
		docs = append(docs, d)
	}
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func asList(v any) []map[string]any {
	var out []map[string]any
	l, _ := v.([]any)
	for _, e := range l {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// TestDeployDockerImage builds the image as the Dockerfile says (context
// script, then docker build) with a private dockerd, then runs it without
// a network: `version`, and `demo`, whose steps need the image's shell.
func TestDeployDockerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: builds an image (-short)")
	}
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		t.Skip("skipping: dockerd not installed (Debian package docker.io)")
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("skipping: docker CLI not installed (Debian package docker.io)")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: starting a private dockerd needs root")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("skipping: the image's shell comes from /bin/busybox (Debian package busybox-static)")
	}
	buildWorker(t) // warms the build cache the context script uses

	ctxDir := t.TempDir()
	script := exec.Command("sh", "scripts/deploy/docker-context.sh", ctxDir)
	script.Dir = "../.."
	if out, err := script.CombinedOutput(); err != nil {
		t.Fatalf("docker-context.sh: %v\n%s", err, out)
	}

	host := startDockerd(t, dockerd, docker)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(docker, args...)
		cmd.Dir = "../.."
		// No buildx here: the classic builder builds this Dockerfile too.
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+host, "DOCKER_BUILDKIT=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	const image = "stroem-worker:deploy-test"
	if out, err := run("build", "-f", "scripts/deploy/Dockerfile", "-t", image, ctxDir); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	out, err := run("run", "--rm", "--network", "none", image, "version")
	if err != nil || !strings.HasPrefix(out, "stroem-worker ") {
		t.Errorf("docker run %s version = %q, %v", image, out, err)
	}
	// The demo runs real claim-and-run children and `sh` steps as uid
	// 10001 against an in-process server on the container's loopback.
	out, err = run("run", "--rm", "--network", "none", image, "demo")
	for _, want := range []string{`output: {"greeting":"Hello Bob!"}`, "first=a b second=c", "noisy / count: completed"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("docker run %s demo: %v; output lacks %q:\n%s", image, err, want, out)
			break
		}
	}
	if out, err := run("image", "inspect", "--format", "{{.Config.User}}", image); err != nil || strings.TrimSpace(out) != fmt.Sprintf("%d:%d", workerUID, workerUID) {
		t.Errorf("image user = %q, %v; want %d:%d", out, err, workerUID, workerUID)
	}

	// The file system, as exported: the CA bundle Go loads for https.
	cid, err := run("create", image)
	if err != nil {
		t.Fatalf("docker create: %v\n%s", err, cid)
	}
	cid = strings.TrimSpace(cid)
	defer run("rm", cid)
	tarPath := filepath.Join(t.TempDir(), "fs.tar")
	if out, err := run("export", "-o", tarPath, cid); err != nil {
		t.Fatalf("docker export: %v\n%s", err, out)
	}
	files := tarFiles(t, tarPath)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(files["etc/ssl/certs/ca-certificates.crt"]) {
		t.Errorf("image has no CA bundle at /etc/ssl/certs/ca-certificates.crt (%d bytes)", len(files["etc/ssl/certs/ca-certificates.crt"]))
	}
	if _, ok := files["usr/local/bin/stroem-worker"]; !ok {
		t.Errorf("image has no /usr/local/bin/stroem-worker")
	}
}

// tarFiles reads the regular files of an exported file system.
func tarFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag != tar.TypeReg || (name != "etc/ssl/certs/ca-certificates.crt" && name != "usr/local/bin/stroem-worker") {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = data
	}
}

// startDockerd starts a dockerd of the test's own, on a private socket
// and data root, without touching the host's network (no iptables, no
// bridge), and stops it at cleanup. It returns the DOCKER_HOST value.
func startDockerd(t *testing.T, dockerd, docker string) string {
	t.Helper()
	// A short path: containerd's sockets live under it (108-byte limit).
	dir, err := os.MkdirTemp("", "swd-")
	if err != nil {
		t.Fatal(err)
	}
	host := "unix://" + filepath.Join(dir, "docker.sock")
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dockerd, "-H", host,
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--iptables=false", "--ip6tables=false", "--bridge=none")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dockerd: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			if log, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("dockerd log (last 4 KiB):\n%s", tail(log, 4096))
			}
		}
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		ping := exec.Command(docker, "version", "--format", "{{.Server.Version}}")
		ping.Env = append(os.Environ(), "DOCKER_HOST="+host)
		out, err := ping.CombinedOutput()
		if err == nil {
			t.Logf("dockerd %s ready", strings.TrimSpace(string(out)))
			return host
		}
		select {
		case err := <-done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("dockerd exited: %v\n%s", err, tail(log, 4096))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd not ready after 90 s: %s", out)
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
