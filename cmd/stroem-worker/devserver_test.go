package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stroem-worker/stroem-worker/shared/fakeserver"
)

// TestDevServerRefusesRemote: a non-loopback address exits 2 with one line
// naming the fix unless --allow-remote comes with a token of one's own.
func TestDevServerRefusesRemote(t *testing.T) {
	t.Parallel()
	own := strings.Repeat("s", 40)
	tests := []struct {
		name string
		args []string
		want string // in the one-line message
	}{
		{"all interfaces", []string{"--listen", "0.0.0.0:0"}, "--allow-remote"},
		{"empty host", []string{"--listen", ":0"}, "--allow-remote"},
		{"ipv6 any", []string{"--listen", "[::]:0"}, "--allow-remote"},
		{"host name", []string{"--listen", "example.com:0"}, "--allow-remote"},
		{"own token without flag", []string{"--listen", "0.0.0.0:0", "--token", own}, "--allow-remote"},
		{"flag without token", []string{"--listen", "0.0.0.0:0", "--allow-remote"}, "--token or set STROEM_DEV_TOKEN"},
		{"flag with the public token", []string{"--listen", "0.0.0.0:0", "--allow-remote", "--token", fakeserver.DefaultToken}, "--token or set STROEM_DEV_TOKEN"},
		{"flag with a short token", []string{"--listen", "0.0.0.0:0", "--allow-remote", "--token", "short"}, "at least 32"},
		{"not host:port", []string{"--listen", "8080"}, "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			code := run(append([]string{"dev-server"}, tt.args...), &out, &errOut)
			msg := errOut.String()
			if code != ExitUsage || !strings.Contains(msg, tt.want) || strings.Count(strings.TrimSpace(msg), "\n") != 0 {
				t.Errorf("dev-server %v = exit %d, stderr %q; want exit %d and one line containing %q", tt.args, code, msg, ExitUsage, tt.want)
			}
			if out.Len() != 0 {
				t.Errorf("dev-server %v printed %q before refusing", tt.args, out.String())
			}
		})
	}
}

// TestDevServerListenAllowed: loopback is fine as it is; another address
// with --allow-remote and an own token is allowed.
func TestDevServerListenAllowed(t *testing.T) {
	t.Parallel()
	own := strings.Repeat("s", 40)
	for _, d := range []DevServerCmd{
		{Listen: "127.0.0.1:0"},
		{Listen: "localhost:8080"},
		{Listen: "[::1]:0"},
		{Listen: "127.0.0.2:0"},
		{Listen: "0.0.0.0:0", AllowRemote: true, Token: own},
		{Listen: ":8282", AllowRemote: true, Token: own},
	} {
		if err := d.checkListen(); err != nil {
			t.Errorf("checkListen(%q, allow-remote %v) = %v, want nil", d.Listen, d.AllowRemote, err)
		}
	}
}

// TestDevServerBannerPastes runs what the dev server prints, as a user
// pasting it would, through bash against the running dev server: queue the
// sample job, run a real worker, fetch the job. The step's output must be
// the JSON object its OUTPUT: line prints.
func TestDevServerBannerPastes(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed", tool)
		}
	}
	worker := buildWorker(t)
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	var stderr syncBuffer
	d := &DevServerCmd{Listen: "127.0.0.1:0", worker: worker}
	var wg sync.WaitGroup
	wg.Go(func() {
		err := d.Run(ctx, &Globals{stdout: pw, stderr: &stderr})
		pw.CloseWithError(err)
	})
	t.Cleanup(func() {
		cancel()
		go io.Copy(io.Discard, pr) // in case Run still writes
		wg.Wait()
	})

	// The banner ends with a blank line after the last command.
	var banner []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		banner = append(banner, sc.Text())
		if len(banner) > 3 && sc.Text() == "" && strings.HasPrefix(banner[len(banner)-2], "curl") {
			break
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the banner: %v", err)
	}
	text := strings.Join(banner, "\n")
	start := strings.Index(text, "export URL=")
	if start < 0 {
		t.Fatalf("banner has no export line:\n%s", text)
	}
	// The token is set before anything uses it.
	if first := strings.Index(text, "$TOKEN"); first < start {
		t.Errorf("banner uses $TOKEN before it sets it:\n%s", text)
	}
	paste := text[start:]

	shell := exec.Command("bash", "-c", paste)
	shell.Dir = t.TempDir()
	shell.Env = append(os.Environ(), "STROEM__WORKSPACE_DIR="+t.TempDir())
	var out, errOut bytes.Buffer
	shell.Stdout, shell.Stderr = &out, &errOut
	if err := shell.Run(); err != nil {
		t.Fatalf("bash -c <banner>: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	var job struct {
		Status string `json:"status"`
		Steps  []struct {
			Status string          `json:"status"`
			Output json.RawMessage `json:"output"`
		} `json:"steps"`
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &job); err != nil || len(job.Steps) != 1 {
		t.Fatalf("last line of the pasted commands is not the job (%v):\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	var output any
	if err := json.Unmarshal(job.Steps[0].Output, &output); err != nil {
		t.Fatalf("step output %s: %v", job.Steps[0].Output, err)
	}
	if diff := cmp.Diff(map[string]any{"ok": true}, output); diff != "" || job.Status != "completed" {
		t.Errorf("pasted job: status %s, output %s; want completed with {\"ok\":true} (-want +got):\n%s", job.Status, job.Steps[0].Output, diff)
	}
}

// TestDevServerTokenExport: the export line carries the public default
// token, names STROEM_DEV_TOKEN rather than echoing it, and quotes a
// --token value for the shell.
func TestDevServerTokenExport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		token string
		want  string
	}{
		{fakeserver.DefaultToken, fakeserver.DefaultToken},
		{"it's a token with spaces and quotes......", `'it'\''s a token with spaces and quotes......'`},
	}
	for _, tt := range tests {
		d := &DevServerCmd{Token: tt.token}
		if got := d.tokenExport(tt.token); got != tt.want {
			t.Errorf("tokenExport(%q) = %s, want %s", tt.token, got, tt.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
