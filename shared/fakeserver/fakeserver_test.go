package fakeserver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = fakeserver.DefaultToken

// env is one fake server behind a real HTTP server.
type env struct {
	t   *testing.T
	srv *fakeserver.Server
	url string
	hc  *http.Client
}

func newEnv(t *testing.T, opts fakeserver.Options) *env {
	t.Helper()
	srv := fakeserver.New(opts)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	return &env{t: t, srv: srv, url: hs.URL, hc: hc}
}

type reply struct {
	status int
	body   string
	header http.Header
}

// do sends a raw request; hdr is name/value pairs. Authorization is the
// good token unless hdr sets it ("" removes it).
func (e *env) do(method, path, body string, hdr ...string) reply {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return reply{resp.StatusCode, string(b), resp.Header}
}

// post sends JSON and requires want, returning the decoded reply.
func (e *env) post(path, body string, want int) map[string]any {
	e.t.Helper()
	r := e.do(http.MethodPost, path, body)
	if r.status != want {
		e.t.Fatalf("POST %s %s = %d %s, want %d", path, body, r.status, r.body, want)
	}
	var m map[string]any
	json.Unmarshal([]byte(r.body), &m)
	return m
}

func (e *env) register(caps, tags string, exclusive bool) string {
	e.t.Helper()
	body := `{"name":"w","capabilities":` + caps + `,"tags":` + tags
	if exclusive {
		body += `,"exclusive":true`
	}
	return e.post("/worker/register", body+`}`, http.StatusOK)["worker_id"].(string)
}

func (e *env) claim(w, caps, tags string, exclusive bool) map[string]any {
	e.t.Helper()
	body := `{"worker_id":"` + w + `","capabilities":` + caps + `,"tags":` + tags
	if exclusive {
		body += `,"exclusive":true`
	}
	return e.post("/worker/jobs/claim", body+`}`, http.StatusOK)
}

func script(name string) fakeserver.StepSpec {
	return fakeserver.StepSpec{StepName: name, ActionSpec: json.RawMessage(`{"type":"script","script":"echo hi"}`)}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	for _, tc := range []struct {
		name, auth string
		want       reply
	}{
		{"absent", "", reply{401, `{"error":"Missing authorization header"}`, nil}},
		{"not visible ASCII", "Bearer tøken", reply{401, `{"error":"Missing authorization header"}`, nil}},
		{"other scheme", "Token " + token, reply{401, `{"error":"Invalid authorization header format"}`, nil}},
		{"lower-case bearer", "bearer " + token, reply{401, `{"error":"Invalid authorization header format"}`, nil}},
		{"two spaces", "Bearer  " + token, reply{401, `{"error":"Invalid worker token"}`, nil}},
		{"wrong token", "Bearer wrong-token", reply{401, `{"error":"Invalid worker token"}`, nil}},
		{"good", "Bearer " + token, reply{200, `{"status":"ok"}`, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := *e
			e.t = t
			got := e.do(http.MethodPost, "/worker/heartbeat", `{"worker_id":"`+uuid.NewString()+`"}`, "Authorization", tc.auth)
			got.header = nil
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(reply{})); diff != "" {
				t.Errorf("heartbeat with Authorization %q (-want +got):\n%s", tc.auth, diff)
			}
		})
	}
	if r := e.do(http.MethodGet, "/dev/jobs", "", "Authorization", ""); r.status != 401 {
		t.Errorf("GET /dev/jobs without token = %d, want 401", r.status)
	}
	if r := e.do(http.MethodGet, "/nowhere", ""); r.status != 404 {
		t.Errorf("GET /nowhere = %d, want 404", r.status)
	}
	if r := e.do(http.MethodGet, "/worker/nowhere", ""); r.status != 404 {
		t.Errorf("GET /worker/nowhere = %d, want 404", r.status)
	}
}

func TestExtractorRejections(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	job := uuid.NewString()
	w := uuid.NewString()
	big := `{"lines":[{"ts":"t","stream":"stdout","line":"` + strings.Repeat("x", 2<<20) + `"}]}`
	for _, tc := range []struct {
		name, path, body, ctype string
		want                    int
	}{
		{"no content type", "/worker/register", `{"name":"w","capabilities":["script"]}`, "", 415},
		{"text content type", "/worker/register", `{"name":"w","capabilities":["script"]}`, "text/plain", 415},
		{"json with charset", "/worker/register", `{"name":"w","capabilities":["script"]}`, "application/json; charset=utf-8", 200},
		{"syntax error", "/worker/register", `{"name":"w",`, "", 400},
		{"empty body", "/worker/jobs/" + job + "/steps/s/complete", ``, "application/json", 400},
		{"lone surrogate", "/worker/register", `{"name":"\ud800","capabilities":["script"]}`, "", 400},
		{"escaped backslash is no surrogate", "/worker/register", `{"name":"\\ud800","capabilities":["script"]}`, "", 200},
		{"surrogate pair", "/worker/register", `{"name":"\ud83d\ude00","capabilities":["script"]}`, "", 200},
		{"not an object", "/worker/register", `["w"]`, "", 422},
		{"null body", "/worker/register", `null`, "", 422},
		{"missing name", "/worker/register", `{"capabilities":["script"]}`, "", 422},
		{"missing capabilities", "/worker/register", `{"name":"w"}`, "", 422},
		{"null capabilities", "/worker/register", `{"name":"w","capabilities":null}`, "", 422},
		{"null tags", "/worker/register", `{"name":"w","capabilities":["script"],"tags":null}`, "", 422},
		{"null exclusive", "/worker/register", `{"name":"w","capabilities":["script"],"exclusive":null}`, "", 422},
		{"null version is fine", "/worker/register", `{"name":"w","capabilities":["script"],"version":null}`, "", 200},
		{"number name", "/worker/register", `{"name":1,"capabilities":["script"]}`, "", 422},
		{"null in list", "/worker/register", `{"name":"w","capabilities":["script",null]}`, "", 422},
		{"unknown fields ignored", "/worker/register", `{"name":"w","capabilities":["script"],"colour":"red"}`, "", 200},
		{"claim null tags", "/worker/jobs/claim", `{"worker_id":"` + w + `","capabilities":["script"],"tags":null}`, "", 422},
		{"claim missing capabilities", "/worker/jobs/claim", `{"worker_id":"` + w + `"}`, "", 422},
		{"start without body field", "/worker/jobs/" + job + "/steps/s/start", `{}`, "", 422},
		{"complete empty object", "/worker/jobs/" + job + "/steps/s/complete", `{}`, "", 200},
		{"complete float exit code", "/worker/jobs/" + job + "/steps/s/complete", `{"exit_code":1.5}`, "", 422},
		{"complete string exit code", "/worker/jobs/" + job + "/steps/s/complete", `{"exit_code":"1"}`, "", 422},
		{"complete numeric error", "/worker/jobs/" + job + "/steps/s/complete", `{"error":3}`, "", 422},
		{"logs missing lines", "/worker/jobs/" + job + "/logs", `{"step_name":"s"}`, "", 422},
		{"logs null lines", "/worker/jobs/" + job + "/logs", `{"lines":null}`, "", 422},
		{"logs entry without ts", "/worker/jobs/" + job + "/logs", `{"lines":[{"stream":"stdout","line":"x"}]}`, "", 422},
		{"logs entry numeric line", "/worker/jobs/" + job + "/logs", `{"lines":[{"ts":"t","stream":"stdout","line":1}]}`, "", 422},
		{"logs null entry", "/worker/jobs/" + job + "/logs", `{"lines":[null]}`, "", 422},
		{"logs over 2 MiB", "/worker/jobs/" + job + "/logs", big, "", 413},
		{"bad job UUID", "/worker/jobs/not-a-uuid/steps/s/complete", `{}`, "", 400},
		{"bad job UUID before content type", "/worker/jobs/not-a-uuid/logs", `{"lines":[]}`, "text/plain", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := *e
			e.t = t
			ct := tc.ctype
			if ct == "" && !strings.HasPrefix(tc.name, "no content") {
				ct = "application/json"
			}
			hdr := []string{"Content-Type", ct}
			if ct == "" {
				hdr = []string{"Content-Type", ""}
			}
			got := e.do(http.MethodPost, tc.path, tc.body, hdr...)
			if got.status != tc.want {
				t.Fatalf("POST %s = %d %q, want %d", tc.path, got.status, got.body, tc.want)
			}
			if ctype := got.header.Get("Content-Type"); tc.want >= 400 && tc.want != 401 && !strings.HasPrefix(ctype, "text/plain") {
				t.Errorf("rejection Content-Type = %q, want text/plain", ctype)
			}
		})
	}
	// Handler errors are JSON, unlike extractor rejections.
	r := e.do(http.MethodPost, "/worker/heartbeat", `{"worker_id":"not-a-uuid"}`)
	if diff := cmp.Diff(reply{400, `{"error":"Invalid worker ID"}`, nil}, reply{r.status, r.body, nil}, cmp.AllowUnexported(reply{})); diff != "" {
		t.Errorf("heartbeat with a bad id (-want +got):\n%s", diff)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	for _, tc := range []struct {
		name, body string
		want       int
		msg        string
	}{
		{"no capabilities", `{"name":"w","capabilities":[]}`, 400, "at least one capability"},
		{"unknown capability", `{"name":"w","capabilities":["shell"]}`, 400, "unknown capability 'shell'"},
		{"ability in tags", `{"name":"w","capabilities":["script"],"tags":["docker"]}`, 400, "docker"},
		{"legacy tags shim", `{"name":"w","capabilities":[],"tags":["script","gpu"]}`, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := *e
			e.t = t
			r := e.do(http.MethodPost, "/worker/register", tc.body)
			if r.status != tc.want || !strings.Contains(r.body, tc.msg) {
				t.Errorf("register %s = %d %s, want %d containing %q", tc.body, r.status, r.body, tc.want, tc.msg)
			}
		})
	}
	a := e.post("/worker/register", `{"name":"x","capabilities":["script","docker"],"tags":["gpu"],"exclusive":true,"version":"1.2"}`, 200)["worker_id"].(string)
	b := e.post("/worker/register", `{"name":"x","capabilities":["script"]}`, 200)["worker_id"].(string)
	if a == b {
		t.Errorf("two registrations got the same id %s", a)
	}
	var got []fakeserver.WorkerState
	for _, w := range e.srv.Workers() {
		if w.ID == a || w.ID == b {
			w.RegisteredAt, w.LastHeartbeat = time.Time{}, time.Time{}
			got = append(got, w)
		}
	}
	v := "1.2"
	want := []fakeserver.WorkerState{
		{ID: a, Name: "x", Capabilities: []string{"script", "docker"}, Tags: []string{"gpu"}, Exclusive: true, Version: &v, Status: "active"},
		{ID: b, Name: "x", Capabilities: []string{"script"}, Tags: []string{}, Status: "active"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Workers() (-want +got):\n%s", diff)
	}
}

func TestNoWorkShape(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	w := e.register(`["script"]`, `[]`, false)
	r := e.do(http.MethodPost, "/worker/jobs/claim", `{"worker_id":"`+w+`","capabilities":["script"],"tags":[]}`)
	var got map[string]any
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 {
		t.Fatalf("claim = %d %s (%v), want 200 JSON", r.status, r.body, err)
	}
	want := map[string]any{}
	for _, k := range []string{"workspace", "job_id", "task_name", "step_name", "action_name", "action_type", "action_image", "action_spec", "input", "runner"} {
		want[k] = nil
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("no-work reply (-want +got):\n%s", diff)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	w := e.register(`["script"]`, `[]`, false)
	job := e.srv.AddJob(fakeserver.JobSpec{TaskName: "hello", Steps: []fakeserver.StepSpec{{
		StepName: "process[0]", ActionName: "say", TimeoutSecs: 7, Revision: "abc",
		ActionSpec: json.RawMessage(`{"type": "script", "script": "echo hi"}`), Input: json.RawMessage(`{"who":"Bob"}`),
	}}})
	got := e.claim(w, `["script"]`, `[]`, false)
	want := map[string]any{
		"workspace": "default", "job_id": job, "task_name": "hello", "step_name": "process[0]",
		"action_name": "say", "action_type": "script", "action_image": nil,
		"action_spec": map[string]any{"type": "script", "script": "echo hi"}, "input": map[string]any{"who": "Bob"},
		"runner": "local", "timeout_secs": 7.0, "revision": "abc",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("claim (-want +got):\n%s", diff)
	}
	if st, _ := e.srv.Step(job, "process[0]"); st.Status != "running" || st.WorkerID != w || st.Claims != 1 {
		t.Errorf("step after claim = %+v, want running by %s", st, w)
	}
	if j, _ := e.srv.Job(job); j.Status != "pending" {
		t.Errorf("job after claim = %s, want pending (start moves it)", j.Status)
	}
	if again := e.claim(w, `["script"]`, `[]`, false); again["job_id"] != nil {
		t.Errorf("second claim = %v, want no work", again)
	}
	path := "/worker/jobs/" + job + "/steps/process%5B0%5D"
	e.post(path+"/start", `{"worker_id":"`+w+`"}`, 200)
	if j, _ := e.srv.Job(job); j.Status != "running" {
		t.Errorf("job after start = %s, want running", j.Status)
	}
	e.post("/worker/jobs/"+job+"/logs", `{"step_name":"process[0]","lines":[{"ts":"t1","stream":"stdout","line":"hi"},{"ts":"t2","stream":"stderr","line":"warn"}]}`, 200)
	e.post("/worker/jobs/"+job+"/logs", `{"lines":[{"ts":"t3","stream":"stdout","line":"anon","extra":1}]}`, 200)
	e.post(path+"/complete", `{"exit_code":0,"output":{"greeting": "Hello Bob!"},"error":null}`, 200)

	st, ok := e.srv.Step(job, "process[0]")
	zero := 0
	wantSt := fakeserver.StepState{Status: "completed", WorkerID: w, ExitCode: &zero, Output: json.RawMessage(`{"greeting":"Hello Bob!"}`),
		Claims: 1, Starts: 1, Completes: 1,
		Attempt: 1, Attempts: []fakeserver.AttemptState{{WorkerID: w, Claims: 1, Starts: 1, Completes: 1, Status: "completed"}}}
	st.StartedAt, st.CompletedAt = time.Time{}, time.Time{}
	if diff := cmp.Diff(wantSt, st, ignoreResults); !ok || diff != "" {
		t.Errorf("Step() (-want +got):\n%s", diff)
	}
	wantLogs := []fakeserver.LogRecord{
		{TS: "t1", Stream: "stdout", Step: "process[0]", Line: "hi"},
		{TS: "t2", Stream: "stderr", Step: "process[0]", Line: "warn"},
		{TS: "t3", Stream: "stdout", Step: "", Line: "anon"},
	}
	if diff := cmp.Diff(wantLogs, e.srv.Logs(job)); diff != "" {
		t.Errorf("Logs() (-want +got):\n%s", diff)
	}
	if j, _ := e.srv.Job(job); j.Status != "completed" {
		t.Errorf("job after complete = %s, want completed", j.Status)
	}
	// Unknown job: 200 everywhere, as on the server.
	other := uuid.NewString()
	e.post("/worker/jobs/"+other+"/steps/x/start", `{"worker_id":"`+w+`"}`, 200)
	e.post("/worker/jobs/"+other+"/steps/x/complete", `{}`, 200)
	e.post("/worker/jobs/"+other+"/logs", `{"lines":[{"ts":"t","stream":"stdout","line":"kept"}]}`, 200)
	if n := len(e.srv.Logs(other)); n != 1 {
		t.Errorf("logs of an unknown job = %d records, want 1", n)
	}
}

func TestCompleteRules(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	ptr := func(n int) *int { return &n }
	for _, tc := range []struct {
		name, body string
		want       fakeserver.StepState
	}{
		{"empty", `{}`, fakeserver.StepState{Status: "completed", Completes: 1}},
		{"exit 0 with output", `{"exit_code":0,"output":[1,2]}`, fakeserver.StepState{Status: "completed", ExitCode: ptr(0), Output: json.RawMessage(`[1,2]`), Completes: 1}},
		{"exit 0 with error", `{"exit_code":0,"error":"boom","output":{"a":1}}`, fakeserver.StepState{Status: "failed", ExitCode: ptr(0), Error: "boom", Completes: 1}},
		{"exit 127", `{"exit_code":127}`, fakeserver.StepState{Status: "failed", ExitCode: ptr(127), Error: "Process exited with code 127", Completes: 1}},
		{"exit -1 with error", `{"exit_code":-1,"error":"Step timed out after 5s"}`, fakeserver.StepState{Status: "failed", ExitCode: ptr(-1), Error: "Step timed out after 5s", Completes: 1}},
		{"null error", `{"exit_code":0,"error":null,"output":null}`, fakeserver.StepState{Status: "completed", ExitCode: ptr(0), Completes: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := *e
			e.t = t
			job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
			e.post("/worker/jobs/"+job+"/steps/s/complete", tc.body, 200)
			got, _ := e.srv.Step(job, "s")
			got.CompletedAt = time.Time{}
			tc.want.Attempt = 1
			tc.want.Attempts = []fakeserver.AttemptState{{Completes: 1, Status: tc.want.Status}}
			if diff := cmp.Diff(tc.want, got, ignoreResults); diff != "" {
				t.Errorf("complete %s (-want +got):\n%s", tc.body, diff)
			}
		})
	}
	// Last writer wins, and completes are counted.
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":3}`, 200)
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":0,"output":1}`, 200)
	if st, _ := e.srv.Step(job, "s"); st.Status != "completed" || st.Completes != 2 || st.Error != "" {
		t.Errorf("after failed then completed = %+v, want completed, 2 completes", st)
	}
	if j, _ := e.srv.Job(job); j.Status != "completed" {
		t.Errorf("job = %s, want completed", j.Status)
	}
}

func TestMatching(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		step      fakeserver.StepSpec
		caps      string
		tags      string
		exclusive bool
		want      bool
	}{
		{"script local", fakeserver.StepSpec{StepName: "s"}, `["script"]`, `[]`, false, true},
		{"script needs script", fakeserver.StepSpec{StepName: "s"}, `["docker"]`, `[]`, false, false},
		{"script on docker runner", fakeserver.StepSpec{StepName: "s", Runner: "docker"}, `["script"]`, `[]`, false, false},
		{"script on docker runner, docker worker", fakeserver.StepSpec{StepName: "s", Runner: "docker"}, `["docker"]`, `[]`, false, true},
		{"script on pod runner", fakeserver.StepSpec{StepName: "s", Runner: "pod"}, `["kubernetes"]`, `[]`, false, true},
		{"docker type from spec", fakeserver.StepSpec{StepName: "s", ActionSpec: json.RawMessage(`{"type":"docker"}`)}, `["script","docker"]`, `[]`, false, true},
		{"pod type", fakeserver.StepSpec{StepName: "s", ActionType: "pod"}, `["docker"]`, `[]`, false, false},
		{"task never", fakeserver.StepSpec{StepName: "s", ActionType: "task"}, `["script","docker","kubernetes","agent"]`, `[]`, false, false},
		{"agent never", fakeserver.StepSpec{StepName: "s", ActionType: "agent"}, `["agent"]`, `[]`, false, false},
		{"required tags present", fakeserver.StepSpec{StepName: "s", RequiredTags: []string{"gpu"}}, `["script"]`, `["gpu","eu"]`, false, true},
		{"required tags missing", fakeserver.StepSpec{StepName: "s", RequiredTags: []string{"gpu"}}, `["script"]`, `["eu"]`, false, false},
		{"exclusive extra tag", fakeserver.StepSpec{StepName: "s", RequiredTags: []string{"gpu"}}, `["script"]`, `["gpu","eu"]`, true, false},
		{"exclusive exact", fakeserver.StepSpec{StepName: "s", RequiredTags: []string{"gpu"}}, `["script"]`, `["gpu"]`, true, true},
		{"exclusive untagged step", fakeserver.StepSpec{StepName: "s"}, `["script"]`, `["gpu"]`, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, fakeserver.Options{})
			// Registered with everything: claim matches on what it sends.
			w := e.register(`["script","docker","kubernetes","agent"]`, `[]`, false)
			job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{tc.step}})
			got := e.claim(w, tc.caps, tc.tags, tc.exclusive)
			if (got["job_id"] == job) != tc.want {
				t.Errorf("claim(%s, %s, exclusive=%v) = %v, want claimed=%v", tc.caps, tc.tags, tc.exclusive, got["job_id"], tc.want)
			}
		})
	}
}

func TestFIFOAndRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	w := e.register(`["script","docker"]`, `[]`, false)
	a := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("one"), script("two")}})
	b := e.srv.AddJob(fakeserver.JobSpec{Workspace: "other", Steps: []fakeserver.StepSpec{{StepName: "img", ActionType: "docker", ActionImage: "alpine"}}})
	var got [][3]any
	for range 3 {
		c := e.claim(w, `["script","docker"]`, `[]`, false)
		got = append(got, [3]any{c["job_id"], c["step_name"], c["runner"]})
	}
	want := [][3]any{{a, "one", "local"}, {a, "two", "local"}, {b, "img", "none"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claim order (-want +got):\n%s", diff)
	}
}

func TestUnregisteredWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	ghost := uuid.NewString()
	if c := e.claim(ghost, `["script"]`, `[]`, false); c["job_id"] != nil {
		t.Fatalf("claim by an unknown worker with no work = %v, want no work", c)
	}
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
	claim := `{"worker_id":"` + ghost + `","capabilities":["script"]}`
	if m := e.post("/worker/jobs/claim", claim, 500); m["error"] != "Internal server error" {
		t.Errorf("claim by an unknown worker = %v, want Internal server error", m)
	}
	if st, _ := e.srv.Step(job, "s"); st.Status != "ready" {
		t.Errorf("step after a failed claim = %s, want ready", st.Status)
	}
	e.post("/worker/jobs/"+job+"/steps/s/start", `{"worker_id":"`+ghost+`"}`, 500)

	// Retention deletes a row: heartbeat still 200, claim 500.
	w := e.register(`["script"]`, `[]`, false)
	e.srv.DeleteWorker(w)
	e.post("/worker/heartbeat", `{"worker_id":"`+w+`"}`, 200)
	e.post("/worker/jobs/claim", `{"worker_id":"`+w+`","capabilities":["script"]}`, 500)
	if len(e.srv.Workers()) != 0 {
		t.Errorf("Workers() after DeleteWorker = %v, want none", e.srv.Workers())
	}
}

func TestRenderFail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	w := e.register(`["script"]`, `[]`, false)
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{{StepName: "s", RenderFail: true}}})
	m := e.post("/worker/jobs/claim", `{"worker_id":"`+w+`","capabilities":["script"]}`, 422)
	if msg, _ := m["error"].(string); !strings.HasPrefix(msg, "Failed to render") {
		t.Errorf("claim error = %q, want Failed to render ...", msg)
	}
	if st, _ := e.srv.Step(job, "s"); st.Status != "failed" || !strings.HasPrefix(st.Error, "Failed to render") {
		t.Errorf("step = %+v, want failed with the render error", st)
	}
	if logs := e.srv.Logs(job); len(logs) != 1 || logs[0].Step != "_server" || logs[0].Stream != "stderr" {
		t.Errorf("logs = %+v, want one _server stderr line", logs)
	}
	if c := e.claim(w, `["script"]`, `[]`, false); c["job_id"] != nil {
		t.Errorf("claim after render failure = %v, want no work", c)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	w := e.register(`["script"]`, `[]`, false)
	cancelled := func(job string) bool {
		t.Helper()
		r := e.do(http.MethodGet, "/worker/jobs/"+job+"/cancelled", "")
		switch r.body {
		case `{"cancelled":true}`:
			return true
		case `{"cancelled":false}`:
			return false
		}
		t.Fatalf("cancelled = %d %s", r.status, r.body)
		return false
	}
	// A job with no running step is cancelled but never enters the set.
	idle := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
	e.srv.CancelJob(idle)
	if st, _ := e.srv.Step(idle, "s"); st.Status != "cancelled" || cancelled(idle) {
		t.Errorf("idle cancelled job: step %s, cancelled=%v, want cancelled step, false", st.Status, cancelled(idle))
	}
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
	e.claim(w, `["script"]`, `[]`, false)
	if cancelled(job) {
		t.Fatal("cancelled before CancelJob = true")
	}
	e.srv.CancelJob(job)
	if !cancelled(job) {
		t.Fatal("cancelled after CancelJob = false")
	}
	if st, _ := e.srv.Step(job, "s"); st.Status != "running" {
		t.Errorf("running step after cancel = %s, want still running", st.Status)
	}
	// Completing a step of a cancelled job is accepted; the job stays cancelled.
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":-1,"error":"Job cancelled"}`, 200)
	if j, _ := e.srv.Job(job); j.Status != "cancelled" || !j.Cancelled {
		t.Errorf("job = %+v, want cancelled and in the set", j)
	}
	e.srv.ForgetCancels()
	if cancelled(job) {
		t.Error("cancelled after ForgetCancels = true, want false")
	}
	if cancelled(uuid.NewString()) {
		t.Error("unknown job cancelled = true")
	}
	if r := e.do(http.MethodGet, "/worker/jobs/xyz/cancelled", ""); r.status != 400 {
		t.Errorf("cancelled of a bad UUID = %d, want 400", r.status)
	}
}

func TestWorkspace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	old := e.srv.AddWorkspace("ws", "rev1", []byte("tarball-1"))
	e.srv.AddWorkspace("ws", "rev2", []byte("tarball-2"))
	e.srv.AddWorkspace("gone", "r0", []byte("t0"))
	e.srv.AddWorkspace("gone", "r1", []byte("t1"))
	e.srv.DropRevision("gone", "r0")
	for _, tc := range []struct {
		name, path, inm string
		status          int
		body, rev       string
	}{
		{"current", "/worker/workspace/ws.tar.gz", "", 200, "tarball-2", "rev2"},
		{"no suffix", "/worker/workspace/ws", "", 200, "tarball-2", "rev2"},
		{"etag matches", "/worker/workspace/ws.tar.gz", `"rev2"`, 304, "", ""},
		{"bare etag matches", "/worker/workspace/ws.tar.gz", `rev2`, 304, "", ""},
		{"stale etag", "/worker/workspace/ws.tar.gz", `"rev1"`, 200, "tarball-2", "rev2"},
		{"pinned old", "/worker/workspace/ws.tar.gz?revision=" + old, "", 200, "tarball-1", "rev1"},
		{"pinned with its etag", "/worker/workspace/ws.tar.gz?revision=rev1", `"rev1"`, 304, "", ""},
		{"pinned other etag", "/worker/workspace/ws.tar.gz?revision=rev1", `"rev2"`, 200, "tarball-1", "rev1"},
		{"pinned dropped", "/worker/workspace/gone.tar.gz?revision=r0", "", 404, `{"error":"Revision 'r0' no longer available for workspace 'gone'"}`, ""},
		{"pinned unknown", "/worker/workspace/ws.tar.gz?revision=nope", "", 404, `{"error":"Revision 'nope' no longer available for workspace 'ws'"}`, ""},
		{"unknown workspace", "/worker/workspace/nope.tar.gz", "", 404, `{"error":"Workspace 'nope' not found"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := *e
			e.t = t
			r := e.do(http.MethodGet, tc.path, "", "If-None-Match", tc.inm)
			got := []string{http.StatusText(r.status), r.body, r.header.Get("X-Revision")}
			want := []string{http.StatusText(tc.status), tc.body, tc.rev}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("GET %s If-None-Match %s (-want +got):\n%s", tc.path, tc.inm, diff)
			}
			if tc.status == 200 {
				if ct, et := r.header.Get("Content-Type"), r.header.Get("ETag"); ct != "application/gzip" || et != `"`+tc.rev+`"` {
					t.Errorf("Content-Type, ETag = %q, %q, want application/gzip, %q", ct, et, `"`+tc.rev+`"`)
				}
			}
		})
	}
	// The default workspace exists and is a valid empty tar.gz.
	r := e.do(http.MethodGet, "/worker/workspace/default.tar.gz", "")
	if rev, _ := e.srv.Revision("default"); r.status != 200 || r.body != string(fakeserver.EmptyTarball()) || len(rev) != 64 {
		t.Errorf("default workspace = %d, rev %q, want 200 and a 64-hex revision", r.status, rev)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
		switch r.URL.Path {
		case "/worker/register":
			return fakeserver.Fault{Status: 503, Body: "busy"}
		case "/worker/heartbeat":
			return fakeserver.Fault{Drop: true}
		}
		return fakeserver.Fault{}
	})
	// Faults come before auth.
	if r := e.do(http.MethodPost, "/worker/register", `{}`, "Authorization", ""); r.status != 503 || r.body != "busy" {
		t.Errorf("register with a 503 fault = %d %q, want 503 busy", r.status, r.body)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.url+"/worker/heartbeat", strings.NewReader(`{}`))
	if resp, err := e.hc.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("heartbeat with a drop fault = %d, want a transport error", resp.StatusCode)
	}
	e.srv.SetFault(nil)
	e.srv.Down(true)
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/worker/jobs/"+uuid.NewString()+"/cancelled", nil)
	if resp, err := e.hc.Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("request while down = %d, want a transport error", resp.StatusCode)
	}
	e.srv.Down(false)
	e.post("/worker/heartbeat", `{"worker_id":"`+uuid.NewString()+`"}`, 200)

	var got []string
	for _, r := range e.srv.Requests() {
		got = append(got, r.Method+" "+r.Path+" "+http.StatusText(r.Status)+" drop="+map[bool]string{true: "y", false: "n"}[r.Fault.Drop])
	}
	want := []string{
		"POST /worker/register Service Unavailable drop=n",
		"POST /worker/heartbeat  drop=y",
		"GET /worker/jobs/" + strings.TrimPrefix(req.URL.Path, "/worker/jobs/")[:36] + "/cancelled  drop=y",
		"POST /worker/heartbeat OK drop=n",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Requests() (-want +got):\n%s", diff)
	}
}

func TestRandomFailures(t *testing.T) {
	t.Parallel()
	run := func() []int {
		f := fakeserver.RandomFailures(0.5, 42, 502)
		var out []int
		for range 64 {
			out = append(out, f(nil).Status)
		}
		return out
	}
	a, b := run(), run()
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different faults (-first +second):\n%s", diff)
	}
	n := 0
	for _, s := range a {
		if s == 502 {
			n++
		}
	}
	if n == 0 || n == len(a) {
		t.Errorf("rate 0.5 failed %d of %d", n, len(a))
	}
	if f := fakeserver.RandomFailures(1, 1, 0)(nil); !f.Drop {
		t.Errorf("RandomFailures(1, 1, 0) = %+v, want a drop", f)
	}
}

func TestRequestsRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	big := `{"step_name":"s","lines":[{"ts":"t","stream":"stdout","line":"` + strings.Repeat("y", 100<<10) + `"}]}`
	job := uuid.NewString()
	e.post("/worker/jobs/"+job+"/logs", big, 200)
	reqs := e.srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("Requests() = %d, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Header.Get("Authorization") != "" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("recorded header = %v, want Content-Type and no Authorization", r.Header)
	}
	if len(r.Body) != 64<<10 || !bytes.HasPrefix([]byte(big), r.Body) || r.BodySize != len(big) || r.Status != 200 {
		t.Errorf("recorded body %d bytes of %d, status %d, want 65536 of %d, 200", len(r.Body), r.BodySize, r.Status, len(big))
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
	done := func(s *fakeserver.Server) bool {
		st, _ := s.Step(job, "s")
		return st.Status == "completed"
	}
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	wg.Go(func() { errc <- e.srv.WaitFor(t.Context(), done) })
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{}`, 200)
	if err := <-errc; err != nil {
		t.Errorf("WaitFor() = %v, want nil", err)
	}
	wg.Wait()

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	never := func(*fakeserver.Server) bool { return false }
	if err := e.srv.WaitFor(ctx, never); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitFor() with an ended ctx = %v, want context.Canceled", err)
	}
	ch := e.srv.Changed()
	e.srv.ForgetCancels()
	select {
	case <-ch:
	default:
		t.Error("Changed() channel not closed after a change")
	}
}

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestSweep(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	e := newEnv(t, fakeserver.Options{Now: c.Now})
	alive := e.register(`["script"]`, `[]`, false)
	silent := e.register(`["script"]`, `["gpu"]`, false)
	running := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{{StepName: "s", RequiredTags: []string{"gpu"}}}})
	e.claim(silent, `["script"]`, `["gpu"]`, false)
	kept := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("mine")}})
	c.Add(20 * time.Second)
	unmatched := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{{StepName: "d", ActionType: "docker"}}})
	e.srv.Sweep()
	if st, _ := e.srv.Step(unmatched, "d"); st.Status != "ready" {
		t.Errorf("unmatched step after 0 s = %s, want ready", st.Status)
	}

	c.Add(110 * time.Second)
	e.post("/worker/heartbeat", `{"worker_id":"`+alive+`"}`, 200)
	e.srv.Sweep()
	status := map[string]string{}
	for _, w := range e.srv.Workers() {
		status[w.ID] = w.Status
	}
	if diff := cmp.Diff(map[string]string{alive: "active", silent: "inactive"}, status); diff != "" {
		t.Errorf("worker statuses (-want +got):\n%s", diff)
	}
	st, _ := e.srv.Step(running, "s")
	if want := "Worker heartbeat timeout (worker " + silent + " unresponsive)"; st.Status != "failed" || st.Error != want {
		t.Errorf("step of the silent worker = %s %q, want failed %q", st.Status, st.Error, want)
	}
	if logs := e.srv.Logs(running); len(logs) != 1 || !strings.HasPrefix(logs[0].Line, "[recovery] Worker "+silent) {
		t.Errorf("recovery log = %+v", logs)
	}
	if j, _ := e.srv.Job(running); j.Status != "failed" {
		t.Errorf("job = %s, want failed", j.Status)
	}
	if st, _ := e.srv.Step(unmatched, "d"); st.Status != "failed" || st.Error != "No active worker with required capability/tags to run this step" {
		t.Errorf("unmatched step = %s %q, want failed", st.Status, st.Error)
	}
	if st, _ := e.srv.Step(kept, "mine"); st.Status != "ready" {
		t.Errorf("matched ready step = %s, want ready", st.Status)
	}
	// A heartbeat re-activates the worker; its failed step stays failed.
	e.post("/worker/heartbeat", `{"worker_id":"`+silent+`"}`, 200)
	if ws := e.srv.Workers(); ws[1].Status != "active" {
		t.Errorf("silent worker after heartbeat = %s, want active", ws[1].Status)
	}
}

func TestDevEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	m := e.post("/dev/jobs", `{"task_name":"hello","steps":[{"step_name":"greet","action_spec":{"type":"script","script":"echo hi"},"required_tags":[]}]}`, 201)
	job, _ := m["job_id"].(string)
	if _, err := uuid.Parse(job); err != nil {
		t.Fatalf("POST /dev/jobs = %v, want a job_id", m)
	}
	e.post("/dev/jobs", `{"task_name":"x","steps":[]}`, 400)
	e.post("/dev/jobs", `{"task_name":"x","stepz":[]}`, 400)
	w := e.register(`["script"]`, `[]`, false)
	e.claim(w, `["script"]`, `[]`, false)
	e.post("/worker/jobs/"+job+"/logs", `{"step_name":"greet","lines":[{"ts":"t","stream":"stdout","line":"hi"}]}`, 200)
	e.post("/dev/jobs/"+job+"/cancel", `{}`, 200)

	r := e.do(http.MethodGet, "/dev/jobs/"+job, "")
	var got struct {
		JobID     string `json:"job_id"`
		Status    string `json:"status"`
		Cancelled bool   `json:"cancelled"`
		Steps     []struct {
			StepName, Status, WorkerID string
		} `json:"steps"`
		Logs []fakeserver.LogRecord `json:"logs"`
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 {
		t.Fatalf("GET /dev/jobs/{id} = %d %s", r.status, r.body)
	}
	if got.JobID != job || got.Status != "cancelled" || !got.Cancelled || len(got.Steps) != 1 || got.Steps[0].Status != "running" || len(got.Logs) != 1 {
		t.Errorf("GET /dev/jobs/{id} = %s", r.body)
	}
	if r := e.do(http.MethodGet, "/dev/jobs", ""); r.status != 200 || !strings.Contains(r.body, job) {
		t.Errorf("GET /dev/jobs = %d %s, want the job listed", r.status, r.body)
	}
	if r := e.do(http.MethodGet, "/dev/jobs/"+uuid.NewString(), ""); r.status != 404 {
		t.Errorf("GET /dev/jobs/unknown = %d, want 404", r.status)
	}
	r = e.do(http.MethodPost, "/dev/workspaces/mine?revision=r9", string(fakeserver.EmptyTarball()), "Content-Type", "application/gzip")
	if r.status != 201 || !strings.Contains(r.body, `"r9"`) {
		t.Errorf("POST /dev/workspaces = %d %s", r.status, r.body)
	}
	if rev, _ := e.srv.Revision("mine"); rev != "r9" {
		t.Errorf("Revision(mine) = %q, want r9", rev)
	}
	e.post("/dev/sweep", `{}`, 200)
}

func TestAddJobPanicsOnBadSpec(t *testing.T) {
	t.Parallel()
	srv := fakeserver.New(fakeserver.Options{})
	for name, spec := range map[string]fakeserver.JobSpec{
		"no steps":       {},
		"duplicate step": {Steps: []fakeserver.StepSpec{script("a"), script("a")}},
		"bad job id":     {JobID: "x", Steps: []fakeserver.StepSpec{script("a")}},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("AddJob(%+v) did not panic", spec)
				}
			}()
			srv.AddJob(spec)
		})
	}
}

func TestArtifacts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
	base := "/worker/jobs/" + job + "/steps/s/artifacts"
	for _, tc := range []struct {
		name, path string
		want       int
	}{
		{"nested", base + "/out/report.html", 201},
		{"replace", base + "/out/report.html", 201},
		{"dotfile", base + "/.keep", 201},
		{"dot-dot segment", base + "/a/%2E%2E/b", 400},
		{"leading dash", base + "/-x", 400},
		{"unknown job", "/worker/jobs/" + uuid.NewString() + "/steps/s/artifacts/a", 404},
	} {
		r := e.do(http.MethodPost, tc.path, "data:"+tc.name, "Content-Type", "text/html")
		if r.status != tc.want {
			t.Errorf("%s: POST %s = %d %s, want %d", tc.name, tc.path, r.status, r.body, tc.want)
		}
	}
	var got []string
	for _, a := range e.srv.Artifacts(job, "s") {
		got = append(got, a.Name+"="+string(a.Data)+" "+a.ContentType)
	}
	if diff := cmp.Diff([]string{"out/report.html=data:replace text/html", ".keep=data:dotfile text/html"}, got); diff != "" {
		t.Errorf("Artifacts() (-want +got):\n%s", diff)
	}
	if r := e.do(http.MethodDelete, base, ""); r.status != 204 || len(e.srv.Artifacts(job, "s")) != 0 {
		t.Errorf("DELETE = %d, %d artifacts left, want 204 and none", r.status, len(e.srv.Artifacts(job, "s")))
	}
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{}`, 200)
	if r := e.do(http.MethodPost, base+"/late", "x"); r.status != 409 {
		t.Errorf("upload to a completed job = %d, want 409", r.status)
	}
	if r := e.do(http.MethodDelete, base, ""); r.status != 409 {
		t.Errorf("DELETE on a completed job = %d, want 409", r.status)
	}
}

func TestState(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	w := e.register(`["script"]`, `[]`, false)
	job := e.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{script("s")}})
	if r := e.do(http.MethodGet, "/worker/state/default/t", ""); r.status != 204 {
		t.Errorf("GET state with none = %d, want 204", r.status)
	}
	r := e.do(http.MethodPost, "/worker/state/default/t/"+job+"?has_json=true", "tgz", "Content-Type", "application/gzip")
	if r.status != 201 || !strings.Contains(r.body, "snapshot_id") {
		t.Fatalf("POST state = %d %s, want 201", r.status, r.body)
	}
	if r := e.do(http.MethodPost, "/worker/state/other/t/"+job, "tgz"); r.status != 400 {
		t.Errorf("POST state for another workspace = %d, want 400", r.status)
	}
	if r := e.do(http.MethodPost, "/worker/global-state/default/"+uuid.NewString(), "tgz"); r.status != 404 {
		t.Errorf("POST global state of an unknown job = %d, want 404", r.status)
	}
	r = e.do(http.MethodGet, "/worker/state/default/t", "")
	snap, _ := e.srv.State("default", "t")
	if r.status != 200 || r.body != "tgz" || r.header.Get("X-Snapshot-Id") != snap.ID || !snap.HasJSON {
		t.Errorf("GET state = %d %q id %q, want 200 tgz id %q", r.status, r.body, r.header.Get("X-Snapshot-Id"), snap.ID)
	}
	c := e.claim(w, `["script"]`, `[]`, false)
	if c["state_storage_key"] == nil || c["state_has_json"] != true || c["global_state_storage_key"] != nil {
		t.Errorf("claim = %v, want state_storage_key and no global key", c)
	}
}

func TestDelayFault(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	e.srv.SetFault(func(*http.Request) fakeserver.Fault { return fakeserver.Fault{Delay: time.Millisecond} })
	e.post("/worker/heartbeat", `{"worker_id":"`+uuid.NewString()+`"}`, 200)
	if reqs := e.srv.Requests(); len(reqs) != 1 || reqs[0].Fault.Delay != time.Millisecond || reqs[0].Status != 200 {
		t.Errorf("Requests() = %+v, want one delayed 200", reqs)
	}
}

func TestOnLogReceivesLinesInsteadOfStoring(t *testing.T) {
	t.Parallel()
	var got []string
	srv := fakeserver.New(fakeserver.Options{OnLog: func(jobID string, recs []fakeserver.LogRecord) {
		for _, r := range recs {
			got = append(got, r.Step+":"+r.Line)
		}
	}})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	job := "5f0c3a9e-2a7b-4c1d-9a55-0a4b1f7e9c21"
	req, _ := http.NewRequest(http.MethodPost, hs.URL+"/worker/jobs/"+job+"/logs", strings.NewReader(
		`{"step_name":"s","lines":[{"ts":"t","stream":"stdout","line":"a"},{"ts":"t","stream":"stderr","line":"b"}]}`))
	req.Header.Set("Authorization", "Bearer "+fakeserver.DefaultToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if diff := cmp.Diff([]string{"s:a", "s:b"}, got); diff != "" {
		t.Errorf("OnLog lines (-want +got):\n%s", diff)
	}
	if n := len(srv.Logs(job)); n != 0 {
		t.Errorf("Logs() with OnLog = %d records, want none kept", n)
	}
}

// lost sends a request whose answer the test expects never to arrive.
func (e *env) lost(method, path, body string) error {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		e.t.Fatalf("%s %s = %d %s, want no answer", method, path, resp.StatusCode, b)
	}
	return err
}

// TestFaultsAfterHandling drops or holds back answers after the server
// has committed what the request asked for: a lost claim answer, a log
// batch sent again after its answer was lost, a complete whose answer was
// lost.
func TestFaultsAfterHandling(t *testing.T) {
	t.Parallel()
	dropAnswer := func(endpoint string) func(*fakeserver.Server, *http.Request) fakeserver.Fault {
		return func(s *fakeserver.Server, r *http.Request) fakeserver.Fault {
			if s.Endpoint(r) == endpoint {
				return fakeserver.Fault{DropAnswer: true}
			}
			return fakeserver.Fault{}
		}
	}

	t.Run("claim", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, fakeserver.Options{})
		w := e.register(`["script"]`, `[]`, false)
		job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
		e.srv.SetFault(func(r *http.Request) fakeserver.Fault { return dropAnswer("POST /worker/jobs/claim")(e.srv, r) })
		e.lost(http.MethodPost, "/worker/jobs/claim", `{"worker_id":"`+w+`","capabilities":["script"]}`)
		st, _ := e.srv.Step(job, "s")
		if st.Status != "running" || st.WorkerID != w || st.Claims != 1 {
			t.Errorf("step after a claim whose answer was lost = %s by %s, %d claims; want running by %s, 1 claim", st.Status, st.WorkerID, st.Claims, w)
		}
		reqs := e.srv.Requests()
		if last := reqs[len(reqs)-1]; last.Path != "/worker/jobs/claim" || !last.Fault.DropAnswer || last.Status != 200 {
			t.Errorf("recorded claim = %s %d %+v, want the claim, status 200 kept back, DropAnswer", last.Path, last.Status, last.Fault)
		}
		// Nothing else is claimable: the step is stranded unless the
		// worker id stops heartbeating (§8 rule 1).
		e.srv.SetFault(nil)
		if c := e.claim(w, `["script"]`, `[]`, false); c["job_id"] != nil {
			t.Errorf("claim after the lost answer = %v, want no work", c)
		}
	})

	t.Run("log batch sent again", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, fakeserver.Options{})
		job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
		var mu sync.Mutex
		lose := 1
		e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
			mu.Lock()
			defer mu.Unlock()
			if e.srv.Endpoint(r) == "POST /worker/jobs/{id}/logs" && lose > 0 {
				lose--
				return fakeserver.Fault{DropAnswer: true}
			}
			return fakeserver.Fault{}
		})
		first := `{"step_name":"s","lines":[{"ts":"t1","stream":"stdout","line":"a"},{"ts":"t2","stream":"stdout","line":"b"}]}`
		e.lost(http.MethodPost, "/worker/jobs/"+job+"/logs", first)
		e.post("/worker/jobs/"+job+"/logs", first, 200) // the retry
		e.post("/worker/jobs/"+job+"/logs", `{"step_name":"s","lines":[{"ts":"t3","stream":"stdout","line":"c"}]}`, 200)

		var lines []string
		for _, l := range e.srv.Logs(job) {
			lines = append(lines, l.Line)
		}
		if diff := cmp.Diff([]string{"a", "b", "a", "b", "c"}, lines); diff != "" {
			t.Errorf("Logs() (-want +got):\n%s", diff)
		}
		want := []fakeserver.LogBatch{
			{Step: "s", First: 0, Lines: 2},
			{Step: "s", First: 2, Lines: 2, Duplicate: 1},
			{Step: "s", First: 4, Lines: 1},
		}
		if diff := cmp.Diff(want, e.srv.LogBatches(job)); diff != "" {
			t.Errorf("LogBatches() (-want +got):\n%s", diff)
		}
	})

	t.Run("complete", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, fakeserver.Options{})
		w := e.register(`["script"]`, `[]`, false)
		job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
		e.claim(w, `["script"]`, `[]`, false)
		e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
			return dropAnswer("POST /worker/jobs/{id}/steps/{step}/complete")(e.srv, r)
		})
		e.lost(http.MethodPost, "/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":0,"output":{"n":1}}`)
		st, _ := e.srv.Step(job, "s")
		if st.Status != "completed" || st.Completes != 1 || string(st.Output) != `{"n":1}` {
			t.Errorf("step after a complete whose answer was lost = %+v, want completed with its output", st)
		}
		if j, _ := e.srv.Job(job); j.Status != "completed" {
			t.Errorf("job = %s, want completed", j.Status)
		}
	})

	t.Run("answer later than the client waits", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, fakeserver.Options{})
		job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
		e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
			if e.srv.Endpoint(r) == "POST /worker/jobs/{id}/steps/{step}/complete" {
				return fakeserver.Fault{DelayAnswer: time.Hour}
			}
			return fakeserver.Fault{}
		})
		// The client gives up once the server has applied the complete,
		// as a client whose timeout ran out would.
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			applied := func(s *fakeserver.Server) bool { st, _ := s.Step(job, "s"); return st.Completes == 1 }
			if e.srv.WaitFor(ctx, applied) == nil {
				cancel()
			}
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/worker/jobs/"+job+"/steps/s/complete", strings.NewReader(`{"exit_code":2}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := e.hc.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("complete with a held answer = %d, want the client to give up", resp.StatusCode)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("complete with a held answer: %v, want context.Canceled", err)
		}
		if st, _ := e.srv.Step(job, "s"); st.Status != "failed" || st.Completes != 1 {
			t.Errorf("step = %s with %d completes, want failed by the one complete", st.Status, st.Completes)
		}
	})

	t.Run("answer delayed, then sent", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, fakeserver.Options{})
		e.srv.SetFault(func(*http.Request) fakeserver.Fault { return fakeserver.Fault{DelayAnswer: time.Millisecond} })
		r := e.do(http.MethodPost, "/worker/register", `{"name":"w","capabilities":["script"]}`)
		if r.status != 200 || r.header.Get("Content-Type") != "application/json" || !strings.Contains(r.body, `"worker_id"`) {
			t.Errorf("register with a delayed answer = %d %s %q, want the whole answer", r.status, r.header.Get("Content-Type"), r.body)
		}
		if n := len(e.srv.Workers()); n != 1 {
			t.Errorf("Workers() = %d, want 1", n)
		}
	})
}

func TestRandomFaults(t *testing.T) {
	t.Parallel()
	lost := fakeserver.Fault{DropAnswer: true}
	run := func() []bool {
		f := fakeserver.RandomFaults(0.5, 42, lost)
		var out []bool
		for range 64 {
			out = append(out, f(nil) == lost)
		}
		return out
	}
	a := run()
	if diff := cmp.Diff(a, run()); diff != "" {
		t.Errorf("same seed, different faults (-first +second):\n%s", diff)
	}
	n := 0
	for _, hit := range a {
		if hit {
			n++
		}
	}
	if n == 0 || n == len(a) {
		t.Errorf("rate 0.5 hit %d of %d", n, len(a))
	}
}

func TestEndpoint(t *testing.T) {
	t.Parallel()
	srv := fakeserver.New(fakeserver.Options{})
	for _, tc := range []struct{ method, path, want string }{
		{"POST", "/worker/jobs/claim", "POST /worker/jobs/claim"},
		{"POST", "/worker/jobs/" + uuid.NewString() + "/steps/a%2Fb/complete", "POST /worker/jobs/{id}/steps/{step}/complete"},
		{"POST", "/worker/jobs/" + uuid.NewString() + "/logs", "POST /worker/jobs/{id}/logs"},
		{"GET", "/worker/jobs/claim", ""},
		{"GET", "/nowhere", ""},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if got := srv.Endpoint(r); got != tc.want {
			t.Errorf("Endpoint(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

// TestAttempts re-queues steps as the server's retry: does and counts the
// claims and calls of each attempt.
func TestAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	w1 := e.register(`["script"]`, `[]`, false)
	w2 := e.register(`["script"]`, `[]`, false)
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{script("s")}})
	if st, _ := e.srv.Step(job, "s"); st.Attempt != 1 || len(st.Attempts) != 1 {
		t.Errorf("new step: attempt %d of %d, want 1 of 1", st.Attempt, len(st.Attempts))
	}
	e.claim(w1, `["script"]`, `[]`, false)
	e.post("/worker/jobs/"+job+"/steps/s/start", `{"worker_id":"`+w1+`"}`, 200)
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":1}`, 200)
	if j, _ := e.srv.Job(job); j.Status != "failed" {
		t.Fatalf("job after its only step failed = %s, want failed", j.Status)
	}
	if !e.srv.Requeue(job, "s") {
		t.Fatal("Requeue() = false")
	}
	st, _ := e.srv.Step(job, "s")
	if st.Status != "ready" || st.Attempt != 2 || st.WorkerID != "" {
		t.Errorf("step after Requeue = %s, attempt %d, worker %q; want ready, attempt 2, no worker", st.Status, st.Attempt, st.WorkerID)
	}
	if j, _ := e.srv.Job(job); j.Status != "running" || !j.FinishedAt.IsZero() {
		t.Errorf("job after Requeue = %s finished %v, want running again", j.Status, j.FinishedAt)
	}
	// A late complete of attempt 1 lands on attempt 2: the server cannot
	// tell them apart, the counts can.
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":1}`, 200)
	e.srv.Requeue(job, "s")
	e.claim(w2, `["script"]`, `[]`, false)
	e.post("/worker/jobs/"+job+"/steps/s/start", `{"worker_id":"`+w2+`"}`, 200)
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":0}`, 200)
	st, _ = e.srv.Step(job, "s")
	want := []fakeserver.AttemptState{
		{WorkerID: w1, Claims: 1, Starts: 1, Completes: 1, Status: "failed"},
		{Completes: 1, Status: "failed"},
		{WorkerID: w2, Claims: 1, Starts: 1, Completes: 1, Status: "completed"},
	}
	if diff := cmp.Diff(want, st.Attempts, ignoreResults); diff != "" || st.Attempt != 3 || st.Claims != 2 || st.Status != "completed" {
		t.Errorf("step = %s, attempt %d, %d claims, want completed, 3, 2; attempts (-want +got):\n%s", st.Status, st.Attempt, st.Claims, diff)
	}
	if e.srv.Requeue(job, "nope") || e.srv.Requeue(uuid.NewString(), "s") {
		t.Error("Requeue() of an unknown step = true")
	}
}

// TestRetries is the server's retry: config: a failed step with attempts
// left is ready again at once, whether a complete or the recovery sweep
// failed it; the last attempt's failure fails the job.
func TestRetries(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	e := newEnv(t, fakeserver.Options{Now: c.Now})
	w := e.register(`["script"]`, `[]`, false)
	spec := script("s")
	spec.Retries = 2
	job := e.srv.AddJob(fakeserver.JobSpec{Steps: []fakeserver.StepSpec{spec}})

	e.claim(w, `["script"]`, `[]`, false)
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":3}`, 200)
	if st, _ := e.srv.Step(job, "s"); st.Status != "ready" || st.Attempt != 2 {
		t.Errorf("after attempt 1 failed: %s, attempt %d; want ready, attempt 2", st.Status, st.Attempt)
	}
	e.claim(w, `["script"]`, `[]`, false)
	c.Add(121 * time.Second) // w falls silent
	e.srv.Sweep()
	if st, _ := e.srv.Step(job, "s"); st.Status != "ready" || st.Attempt != 3 || st.Attempts[1].Status != "failed" {
		t.Errorf("after attempt 2 was failed by the sweep: %s, attempt %d, attempts %+v; want ready, attempt 3", st.Status, st.Attempt, st.Attempts)
	}
	e.post("/worker/heartbeat", `{"worker_id":"`+w+`"}`, 200)
	e.claim(w, `["script"]`, `[]`, false)
	e.post("/worker/jobs/"+job+"/steps/s/complete", `{"exit_code":3}`, 200)
	st, _ := e.srv.Step(job, "s")
	if j, _ := e.srv.Job(job); st.Status != "failed" || st.Attempt != 3 || j.Status != "failed" {
		t.Errorf("after the last attempt failed: step %s, attempt %d, job %s; want failed, 3, failed", st.Status, st.Attempt, j.Status)
	}
}

// ignoreResults leaves AttemptState.Results to the test about them.
var ignoreResults = cmpopts.IgnoreFields(fakeserver.AttemptState{}, "Results")

// TestAttemptResults: a completion resent after a lost answer repeats a
// result of its attempt; one of another attempt adds a different one.
func TestAttemptResults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, fakeserver.Options{})
	job := e.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: []byte(`{"type":"script","script":"true"}`)}}})
	complete := func(body string) { e.post("/worker/jobs/"+job+"/steps/s/complete", body, 200) }
	complete(`{"exit_code":0,"output":{"pid":1}}`)
	complete(`{"exit_code":0,"output":{"pid":1}}`)
	complete(`{"exit_code":0,"output":{"pid":2}}`)
	st, _ := e.srv.Step(job, "s")
	want := []string{`0|null|{"pid":1}`, `0|null|{"pid":1}`, `0|null|{"pid":2}`}
	if diff := cmp.Diff(want, st.Attempts[0].Results); diff != "" {
		t.Errorf("Results (-want +got):\n%s", diff)
	}
}
