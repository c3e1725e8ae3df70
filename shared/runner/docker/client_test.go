package docker

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolveHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		configured, dockerHost string
		want                   Host
	}{
		{"unix:///a.sock", "tcp://b:1", Host{"unix:///a.sock", "docker.host"}},
		{"", "tcp://b:1", Host{"tcp://b:1", "DOCKER_HOST"}},
		{"", "", Host{DefaultHost, "default"}},
	}
	for _, tt := range tests {
		if got := ResolveHost(tt.configured, env(map[string]string{"DOCKER_HOST": tt.dockerHost})); got != tt.want {
			t.Errorf("ResolveHost(%q, DOCKER_HOST=%q) = %+v, want %+v", tt.configured, tt.dockerHost, got, tt.want)
		}
	}
}

func TestNewClientAddresses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr     string
		env      map[string]string
		wantBase string
		wantErr  string
	}{
		{"unix:///var/run/docker.sock", nil, "http://docker", ""},
		{"tcp://10.0.0.1:2375", nil, "http://10.0.0.1:2375", ""},
		{"tcp://dind", nil, "http://dind:2375", ""},
		{"tcp://dind", map[string]string{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/nonexistent"}, "https://dind:2376", ""},
		{"tcp://[::1]:2376", map[string]string{"DOCKER_CERT_PATH": "/nonexistent"}, "https://[::1]:2376", ""},
		{"https://h:9", nil, "https://h:9", ""},
		{"/var/run/docker.sock", nil, "", "want unix:///path/to/docker.sock or tcp://host:port"},
		{"ssh://me@host", nil, "", "ssh:// is not supported"},
		{"npipe:////./pipe/docker_engine", nil, "", "scheme npipe:// is not supported"},
		{"unix://", nil, "", "no socket path"},
	}
	for _, tt := range tests {
		c, err := NewClient(Host{tt.addr, "docker.host"}, ClientOptions{Getenv: env(tt.env)})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadHost) {
				t.Errorf("NewClient(%q) = %v, want ErrBadHost containing %q", tt.addr, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("NewClient(%q) = %v", tt.addr, err)
			continue
		}
		if c.base != tt.wantBase {
			t.Errorf("NewClient(%q).base = %q, want %q", tt.addr, c.base, tt.wantBase)
		}
	}
}

func TestNegotiate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		api, min, want, wantErr string
	}{
		{"1.41", "1.12", "1.41", ""},
		{"1.43", "1.12", "1.43", ""},
		{"1.52", "1.44", "1.47", ""},
		{"1.60", "1.50", "1.50", ""},
		{"", "", "1.41", ""},
		{"1.40", "1.12", "", "needs 1.41 or newer"},
	}
	for _, tt := range tests {
		got, err := negotiate(Version{APIVersion: tt.api, MinAPIVersion: tt.min, Version: "x"})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("negotiate(%s) = %v, want error %q", tt.api, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("negotiate(%s, min %s) = %q, %v, want %q", tt.api, tt.min, got, err, tt.want)
		}
	}
}

// fakeEngine answers /version and hands the rest to h.
func fakeEngine(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/version" {
			io.WriteString(w, `{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}`)
			return
		}
		h(w, r)
	}))
}

// TestTLS: DOCKER_TLS_VERIFY with DOCKER_CERT_PATH/ca.pem verifies the
// engine's certificate.
func TestTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"Version":"x","ApiVersion":"1.43"}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "tcp://" + strings.TrimPrefix(srv.URL, "https://")
	c, err := NewClient(Host{addr, "DOCKER_HOST"}, ClientOptions{Getenv: env(map[string]string{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": dir})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.ServerVersion(t.Context()); err != nil || c.APIVersion() != "1.43" {
		t.Errorf("ServerVersion() over TLS = %+v, %v (API %q), want 1.43", v, err, c.APIVersion())
	}
	// Without the CA the engine's certificate is refused.
	plain, err := NewClient(Host{addr, "DOCKER_HOST"}, ClientOptions{Getenv: env(map[string]string{"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": t.TempDir()})})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.ServerVersion(t.Context()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("ServerVersion() with an unknown CA = %v, want a certificate error", err)
	}
}

// TestPullAuthAndMessage: the pull carries the credentials of the
// image's registry and a failure reported in the progress stream is the
// step's error text.
func TestPullAuthAndMessage(t *testing.T) {
	t.Parallel()
	var gotAuth, gotQuery string
	srv := fakeEngine(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/json") && strings.Contains(r.URL.Path, "/images/"):
			http.Error(w, `{"message":"No such image"}`, http.StatusNotFound)
		case strings.HasSuffix(r.URL.Path, "/images/create"):
			gotAuth, gotQuery = r.Header.Get("X-Registry-Auth"), r.URL.RawQuery
			io.WriteString(w, `{"status":"Pulling from team/app"}`+"\n"+`{"errorDetail":{"message":"pull access denied for registry.example.com/team/app, repository does not exist or may require 'docker login'"},"error":"pull access denied"}`+"\n")
		default:
			http.NotFound(w, r)
		}
	})
	defer srv.Close()
	home := t.TempDir()
	cfg := `{"auths":{"https://registry.example.com/v2/":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("bob:s3cret")) + `"}}}`
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(Host{"tcp://" + strings.TrimPrefix(srv.URL, "http://"), "docker.host"}, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &Runner{Client: c, Getenv: env(map[string]string{"HOME": home})}
	err = r.ensureImage(t.Context(), NormalizeImage("registry.example.com/team/app"))
	want := "Failed to pull image registry.example.com/team/app:latest: pull access denied for registry.example.com/team/app, repository does not exist or may require 'docker login'"
	if err == nil || err.Error() != want {
		t.Errorf("ensureImage() = %v, want %q", err, want)
	}
	if gotQuery != "fromImage=registry.example.com%2Fteam%2Fapp&tag=latest" {
		t.Errorf("pull query = %q, want fromImage and tag latest", gotQuery)
	}
	raw, err := base64.URLEncoding.DecodeString(gotAuth)
	if err != nil {
		t.Fatalf("X-Registry-Auth %q: %v", gotAuth, err)
	}
	var a authConfig
	json.Unmarshal(raw, &a)
	if diff := cmp.Diff(authConfig{Username: "bob", Password: "s3cret", ServerAddress: "registry.example.com"}, a); diff != "" {
		t.Errorf("X-Registry-Auth (-want +got):\n%s", diff)
	}
}

// TestPullPolicies: if-not-present pulls only a missing image, always
// pulls and runs the local copy when the pull fails, never never pulls.
func TestPullPolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		policy      string
		present     bool
		pullFails   bool
		wantPulls   int
		wantErrPart string
	}{
		{PullIfNotPresent, true, false, 0, ""},
		{PullIfNotPresent, false, false, 1, ""},
		{"", false, true, 1, "Failed to pull image a:latest: registry down"},
		{PullAlways, true, false, 1, ""},
		{PullAlways, true, true, 1, ""},
		{PullAlways, false, true, 1, "Failed to pull image a:latest: registry down"},
		{PullNever, true, false, 0, ""},
		{PullNever, false, false, 0, "docker.pull_policy is never"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/present=%v/fails=%v", tt.policy, tt.present, tt.pullFails), func(t *testing.T) {
			t.Parallel()
			pulls := 0
			srv := fakeEngine(t, func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasSuffix(r.URL.Path, "/images/a:latest/json"):
					if !tt.present {
						http.Error(w, `{"message":"No such image: a:latest"}`, http.StatusNotFound)
					}
				case strings.HasSuffix(r.URL.Path, "/images/create"):
					pulls++
					if tt.pullFails {
						http.Error(w, `{"message":"registry down"}`, http.StatusInternalServerError)
					}
				default:
					http.NotFound(w, r)
				}
			})
			defer srv.Close()
			c, _ := NewClient(Host{"tcp://" + strings.TrimPrefix(srv.URL, "http://"), "x"}, ClientOptions{})
			defer c.Close()
			r := &Runner{Client: c, PullPolicy: tt.policy, Getenv: env(nil)}
			err := r.ensureImage(context.Background(), "a:latest")
			if tt.wantErrPart == "" && err != nil || tt.wantErrPart != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErrPart)) {
				t.Errorf("ensureImage() = %v, want error containing %q", err, tt.wantErrPart)
			}
			if pulls != tt.wantPulls {
				t.Errorf("pulls = %d, want %d", pulls, tt.wantPulls)
			}
		})
	}
}

func TestImageReferences(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ in, norm, name, tag, registry string }{
		{"alpine", "alpine:latest", "alpine", "latest", "docker.io"},
		{"alpine:3.20", "alpine:3.20", "alpine", "3.20", "docker.io"},
		{"library/alpine", "library/alpine:latest", "library/alpine", "latest", "docker.io"},
		{"localhost:5000/app", "localhost:5000/app:latest", "localhost:5000/app", "latest", "localhost:5000"},
		{"localhost/busybox:test", "localhost/busybox:test", "localhost/busybox", "test", "localhost"},
		{"ghcr.io/fremvaerk/stroem-runner:latest", "ghcr.io/fremvaerk/stroem-runner:latest", "ghcr.io/fremvaerk/stroem-runner", "latest", "ghcr.io"},
		{"app@sha256:abc", "app@sha256:abc", "app", "sha256:abc", "docker.io"},
		{"index.docker.io/library/alpine", "index.docker.io/library/alpine:latest", "index.docker.io/library/alpine", "latest", "docker.io"},
	} {
		norm := NormalizeImage(tt.in)
		name, tag := splitTag(norm)
		if norm != tt.norm || name != tt.name || tag != tt.tag || registryOf(norm) != tt.registry {
			t.Errorf("%s: normalized %q, name %q, tag %q, registry %q; want %q %q %q %q", tt.in, norm, name, tag, registryOf(norm), tt.norm, tt.name, tt.tag, tt.registry)
		}
	}
}

// TestCredentials: credHelpers, then credsStore, then auths, as the
// Docker CLI reads them; a helper with nothing falls back to auths.
func TestCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := `{
  "auths": {"https://index.docker.io/v1/": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("hub:pw")) + `"},
            "quay.io": {"identitytoken": "tok"}},
  "credsStore": "store",
  "credHelpers": {"gcr.io": "gcloud"}
}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	helper := func(_ context.Context, name, server string) (string, string, error) {
		switch {
		case name == "gcloud" && server == "gcr.io":
			return "oauth2accesstoken", "gtoken", nil
		case name == "store" && server == "store.example.com":
			return "<token>", "idtok", nil
		}
		return "", "", errNoCredentials
	}
	c := credentials{getenv: env(map[string]string{"DOCKER_CONFIG": dir}), helper: helper}
	for _, tt := range []struct {
		ref  string
		want authConfig
	}{
		{"gcr.io/p/app:1", authConfig{Username: "oauth2accesstoken", Password: "gtoken", ServerAddress: "gcr.io"}},
		{"store.example.com/app:1", authConfig{IdentityToken: "idtok", ServerAddress: "store.example.com"}},
		{"alpine:3", authConfig{Username: "hub", Password: "pw", ServerAddress: dockerHub}},
		{"quay.io/x/y:1", authConfig{IdentityToken: "tok", ServerAddress: "quay.io"}},
		{"other.example.com/a:1", authConfig{}},
	} {
		h, err := c.header(context.Background(), tt.ref)
		if err != nil {
			t.Errorf("header(%s) = %v", tt.ref, err)
			continue
		}
		var got authConfig
		if h != "" {
			raw, _ := base64.URLEncoding.DecodeString(h)
			json.Unmarshal(raw, &got)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("header(%s) (-want +got):\n%s", tt.ref, diff)
		}
	}
	// No config file: no credentials, no error.
	if h, err := (credentials{getenv: env(map[string]string{"HOME": t.TempDir()})}).header(context.Background(), "alpine:3"); h != "" || err != nil {
		t.Errorf("header() without a config file = %q, %v", h, err)
	}
}

// TestCredentialHelperProtocol runs a real docker-credential-<name>.
func TestCredentialHelperProtocol(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 2\nif [ \"$server\" = reg.example.com ]; then echo '{\"ServerURL\":\"reg.example.com\",\"Username\":\"u\",\"Secret\":\"s\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-fake"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	user, secret, err := runHelper(context.Background(), "fake", "reg.example.com")
	if err != nil || user != "u" || secret != "s" {
		t.Errorf("runHelper() = %q, %q, %v; want u, s", user, secret, err)
	}
	if _, _, err := runHelper(context.Background(), "fake", "other"); !errors.Is(err, errNoCredentials) {
		t.Errorf("runHelper(other) = %v, want errNoCredentials", err)
	}
}

func TestParseResources(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"": 0, "500m": 5e8, "2": 2e9, "1.5": 1.5e9, "0.25": 2.5e8} {
		if got, err := parseCPU(in); err != nil || got != want {
			t.Errorf("parseCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"": 0, "512Mi": 512 << 20, "1Gi": 1 << 30, "500M": 5e8, "2048": 2048, "1e9": 1e9, "128k": 128e3} {
		if got, err := parseMemory(in); err != nil || got != want {
			t.Errorf("parseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "-1", "1Zi", "NaN"} {
		if _, err := parseMemory(bad); err == nil {
			t.Errorf("parseMemory(%q) = nil error", bad)
		}
		if _, err := parseCPU(bad); err == nil {
			t.Errorf("parseCPU(%q) = nil error", bad)
		}
	}
}
