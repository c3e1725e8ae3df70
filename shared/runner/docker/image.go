package docker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/stroem-worker/stroem-worker/shared/process"
)

// Pull policies (docker.pull_policy).
const (
	PullIfNotPresent = "if-not-present"
	PullAlways       = "always"
	PullNever        = "never"
)

// NormalizeImage gives a reference with neither tag nor digest the tag
// "latest": the engine would otherwise pull every tag of the repository.
func NormalizeImage(ref string) string {
	if strings.Contains(ref, "@") {
		return ref
	}
	if strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		return ref
	}
	return ref + ":latest"
}

// splitTag splits a reference into its name and its tag or digest.
func splitTag(ref string) (name, tag string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

// dockerHub is the key the Docker CLI files Docker Hub's credentials under.
const dockerHub = "https://index.docker.io/v1/"

// registryOf is the registry host of a reference: its first component
// when that looks like a host (a dot, a port, localhost), else Docker Hub.
func registryOf(ref string) string {
	first, _, ok := strings.Cut(ref, "/")
	if !ok || !(strings.ContainsAny(first, ".:") || first == "localhost") {
		return "docker.io"
	}
	switch first {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return first
}

// authConfig is the body of the X-Registry-Auth header.
type authConfig struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	ServerAddress string `json:"serveraddress,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// credentials reads registry credentials the way the Docker CLI stores
// them: $DOCKER_CONFIG/config.json (else ~/.docker/config.json), a
// credHelpers entry for the registry, else credsStore, else the auths
// entry. Helpers run as docker-credential-<name> get.
type credentials struct {
	getenv func(string) string
	// helper runs a credential helper (nil: the real one).
	helper func(ctx context.Context, name, server string) (user, secret string, err error)
}

type configFile struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
	CredsStore  string            `json:"credsStore"`
	CredHelpers map[string]string `json:"credHelpers"`
}

// errNoCredentials: the helper has nothing for this registry.
var errNoCredentials = errors.New("no credentials")

// header returns the X-Registry-Auth value for pulling ref, "" when the
// config file has nothing for its registry.
func (c credentials) header(ctx context.Context, ref string) (string, error) {
	dir := c.getenv("DOCKER_CONFIG")
	if dir == "" {
		home := c.getenv("HOME")
		if home == "" {
			return "", nil
		}
		dir = filepath.Join(home, ".docker")
	}
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading registry credentials: %w", err)
	}
	var cf configFile
	if err := json.Unmarshal(data, &cf); err != nil {
		return "", fmt.Errorf("reading registry credentials from %s: %w", path, err)
	}
	registry := registryOf(ref)
	server := registry
	if registry == "docker.io" {
		server = dockerHub
	}
	helper := cf.CredsStore
	for k, h := range cf.CredHelpers {
		if registryKey(k) == registry {
			helper = h
		}
	}
	var auth authConfig
	if helper != "" {
		run := c.helper
		if run == nil {
			run = runHelper
		}
		user, secret, err := run(ctx, helper, server)
		switch {
		case err == nil && user == "<token>":
			auth = authConfig{IdentityToken: secret, ServerAddress: server}
		case err == nil:
			auth = authConfig{Username: user, Password: secret, ServerAddress: server}
		case !errors.Is(err, errNoCredentials):
			return "", fmt.Errorf("registry credentials for %s from docker-credential-%s: %w", registry, helper, err)
		}
	}
	if auth == (authConfig{}) {
		for k, a := range cf.Auths {
			if registryKey(k) != registry {
				continue
			}
			auth = authConfig{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken,
				RegistryToken: a.RegistryToken, ServerAddress: server}
			if a.Auth != "" {
				raw, err := base64.StdEncoding.DecodeString(a.Auth)
				if err != nil {
					return "", fmt.Errorf("registry credentials for %s in %s: auth is not base64", registry, path)
				}
				user, pass, _ := strings.Cut(string(raw), ":")
				auth.Username, auth.Password = user, pass
			}
			break
		}
	}
	if auth == (authConfig{}) {
		return "", nil
	}
	b, _ := json.Marshal(auth)
	return base64.URLEncoding.EncodeToString(b), nil
}

// registryKey is the registry host a config file key names: keys may be
// "registry.example.com", "https://registry.example.com/v2/" or Docker
// Hub's "https://index.docker.io/v1/".
func registryKey(k string) string {
	if _, rest, ok := strings.Cut(k, "://"); ok {
		k = rest
	}
	k, _, _ = strings.Cut(k, "/")
	switch k {
	case "index.docker.io", "registry-1.docker.io", "docker.io":
		return "docker.io"
	}
	return k
}

// helperTimeout bounds one credential helper run.
const helperTimeout = time.Minute

// runHelper runs docker-credential-<name> get for server.
func runHelper(ctx context.Context, name, server string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-credential-"+name, "get")
	cmd.Stdin = strings.NewReader(server)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	// Through the process registry: the worker's orphan sweep must not
	// reap it from under os/exec.
	err := process.StartCmd(cmd)
	if err == nil {
		err = process.WaitCmd(cmd)
	}
	if err != nil {
		msg := strings.TrimSpace(out.String() + " " + stderr.String())
		if strings.Contains(strings.ToLower(msg), "credentials not found") {
			return "", "", errNoCredentials
		}
		return "", "", fmt.Errorf("%v: %s", err, msg)
	}
	var cred struct {
		Username string
		Secret   string
	}
	if err := json.Unmarshal(out.Bytes(), &cred); err != nil {
		return "", "", fmt.Errorf("decoding its answer: %w", err)
	}
	return cred.Username, cred.Secret, nil
}
