package oneshot_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		mode := int64(0o644)
		if strings.HasSuffix(n, ".sh") || strings.HasSuffix(n, ".py") {
			mode = 0o755
		}
		tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func untar(t *testing.T, data []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	out := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeReg {
			out[h.Name] = string(b)
		}
	}
}

func TestArtifactsUploaded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	script := `cd "$ARTIFACTS_DIR"
echo '<html><body>report</body></html>' > report.html
mkdir -p nested/dir && echo '{"a":1}' > nested/dir/data.json
: > empty.txt
echo hidden > .hidden
ln -s report.html link.html
printf '# Title\n' > notes.md`
	job := e.job(map[string]any{"script": script}, 0)
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	if st := e.step(job); st.Status != "completed" {
		t.Fatalf("step = %s %q", st.Status, st.Error)
	}
	got := map[string]string{}
	for _, a := range e.srv.Artifacts(job, "s") {
		got[a.Name] = a.ContentType + " " + strings.TrimSpace(string(a.Data))
	}
	want := map[string]string{
		"report.html":          "text/html <html><body>report</body></html>",
		"nested/dir/data.json": `application/json {"a":1}`,
		"empty.txt":            "text/plain ",
		".hidden":              "text/plain hidden",
		"notes.md":             "text/markdown # Title",
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("artifact %s = %q, want %q", name, got[name], w)
		}
	}
	if _, ok := got["link.html"]; ok {
		t.Errorf("the symlink was uploaded; links are skipped")
	}
}

func TestArtifactUploadFailureFailsStep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.srv.SetFault(func(r *http.Request) fakeserver.Fault {
		if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/artifacts/") {
			return fakeserver.Fault{Status: http.StatusServiceUnavailable, Body: `{"error":"storage down"}`}
		}
		return fakeserver.Fault{}
	})
	job := e.job(map[string]any{"script": `echo x > "$ARTIFACTS_DIR/out.txt"; echo 'OUTPUT: {"k":1}'`}, 0)
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	st := e.step(job)
	if st.Status != "failed" || *st.ExitCode != 1 || !strings.HasPrefix(st.Error, "artifact upload failed: ") {
		t.Errorf("step = %s exit %v %q, want failed, 1, 'artifact upload failed: ...'", st.Status, st.ExitCode, st.Error)
	}
	posts, deletes := 0, 0
	for _, r := range e.srv.Requests() {
		switch {
		case r.Method == http.MethodPost && strings.Contains(r.Path, "/artifacts/"):
			posts++
		case r.Method == http.MethodDelete && strings.HasSuffix(r.Path, "/artifacts"):
			deletes++
		}
	}
	if posts != 3 || deletes != 1 {
		t.Errorf("artifact uploads tried %d times and deleted %d times, want 3 and 1", posts, deletes)
	}
}

func TestStateRoundTrip(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.srv.PutState(fakeserver.DefaultWorkspace, "t", fakeserver.Snapshot{HasJSON: true,
		Tarball: tarGz(t, map[string]string{"state.json": `{"count":1}`, "seen.txt": "a\n"})})
	script := `cat "$STATE_DIR/seen.txt"
echo "count was $(cat "$STATE_DIR/state.json")"
cp "$STATE_DIR/seen.txt" "$STATE_OUT_DIR/seen.txt" && echo b >> "$STATE_OUT_DIR/seen.txt"
echo 'STATE: {"count": 2}'
echo 'STATE: {"last": "b"}'
echo 'GLOBAL_STATE: {"runs": 7}'`
	job := e.job(map[string]any{"script": script}, 0)
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	if st := e.step(job); st.Status != "completed" {
		t.Fatalf("step = %s %q", st.Status, st.Error)
	}
	if got := strings.Join(e.lines(job)[:2], "|"); got != `a|count was {"count":1}` {
		t.Errorf("the step saw %q, want the downloaded snapshot", got)
	}
	snap, ok := e.srv.State(fakeserver.DefaultWorkspace, "t")
	if !ok || !snap.HasJSON {
		t.Fatalf("task state = %+v, %v; want a snapshot with state.json", snap, ok)
	}
	files := untar(t, snap.Tarball)
	var state map[string]any
	json.Unmarshal([]byte(files["state.json"]), &state)
	if state["count"] != float64(2) || state["last"] != "b" || files["seen.txt"] != "a\nb\n" {
		t.Errorf("uploaded task state = %v, files %v", state, files)
	}
	global, ok := e.srv.State(fakeserver.DefaultWorkspace, "")
	if !ok || !strings.Contains(untar(t, global.Tarball)["state.json"], `"runs":7`) {
		t.Errorf("global state = %+v, %v; want runs 7", global, ok)
	}
}

func TestWorkspaceSourceAndLibrary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	rev := e.srv.AddWorkspace(fakeserver.DefaultWorkspace, "", tarGz(t, map[string]string{
		"bin/hello.sh":            "#!/bin/sh\necho \"hello $1 from $(basename \"$PWD\")\"\n",
		"_libraries/tools/say.sh": "#!/bin/sh\necho library says $1\n",
	}))
	raw, _ := json.Marshal(map[string]any{"type": "script", "source": "bin/hello.sh", "args": []string{"world"}})
	lib, _ := json.Marshal(map[string]any{"type": "script", "source": "say.sh", "args": []string{"hi"}})
	job := e.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{
		{StepName: "s", ActionSpec: raw, Revision: rev},
		{StepName: "lib", ActionName: "tools.say", ActionSpec: lib},
	}})
	for range 2 {
		if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	logs := map[string]string{}
	for _, l := range e.srv.Logs(job) {
		logs[l.Step] = l.Line
	}
	if want := "hello world from " + rev; logs["s"] != want {
		t.Errorf("source step printed %q, want %q", logs["s"], want)
	}
	if logs["lib"] != "library says hi" {
		t.Errorf("library step printed %q", logs["lib"])
	}
	// A pinned revision the server no longer has fails the step with the
	// server's message, without a start report.
	gone := e.srv.AddJob(fakeserver.JobSpec{TaskName: "t", Steps: []fakeserver.StepSpec{{StepName: "s", ActionSpec: raw, Revision: "0000000000000000000000000000000000000000"}}})
	if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
		t.Fatal(err)
	}
	st, _ := e.srv.Step(gone, "s")
	if st.Status != "failed" || !strings.HasPrefix(st.Error, "Failed to download workspace: ") || st.Starts != 0 {
		t.Errorf("step with a gone revision = %s %q starts %d, want failed, download error, no start", st.Status, st.Error, st.Starts)
	}
}

func TestLanguages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lang, bin, script, want string
	}{
		{"python", "python3", "import sys\nprint('py', sys.argv[1])", "py arg1"},
		{"javascript", "node", "console.log('js', process.argv[2])", "js arg1"},
	}
	for _, tt := range tests {
		t.Run(tt.lang, func(t *testing.T) {
			t.Parallel()
			if _, err := exec.LookPath(tt.bin); err != nil {
				t.Skipf("%s is not installed on this machine", tt.bin)
			}
			e := newEnv(t, nil)
			// The interpreter is named so that uv or bun, if installed,
			// do not change what runs.
			job := e.job(map[string]any{"language": tt.lang, "interpreter": tt.bin, "script": tt.script, "args": []string{"arg1"}}, 0)
			if _, err := e.run(ctxT(t), oneshot.Options{}); err != nil {
				t.Fatal(err)
			}
			if st := e.step(job); st.Status != "completed" || strings.Join(e.lines(job), "|") != tt.want {
				t.Errorf("%s step = %s %q, lines %q; want %q", tt.lang, st.Status, st.Error, e.lines(job), tt.want)
			}
		})
	}
}
