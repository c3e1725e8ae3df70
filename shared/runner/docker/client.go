package docker

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Engine API versions: 1.41 is Docker 20.10 (Debian 12's docker.io) and
// what podman 4 serves; newer engines are spoken to at their own version
// up to maxAPIVersion, the newest whose behaviour this client was
// checked against (Docker 29 refuses versions below 1.44).
const (
	minAPIVersion = "1.41"
	maxAPIVersion = "1.47"
)

// DefaultHost is the engine address when neither docker.host nor
// DOCKER_HOST names one.
const DefaultHost = "unix:///var/run/docker.sock"

// Host is the engine address and where it came from, for messages.
type Host struct {
	Addr string
	From string // "docker.host", "DOCKER_HOST" or "default"
}

// ResolveHost picks the engine: docker.host (configured), else
// DOCKER_HOST, else the default socket.
func ResolveHost(configured string, getenv func(string) string) Host {
	switch {
	case configured != "":
		return Host{configured, "docker.host"}
	case getenv("DOCKER_HOST") != "":
		return Host{getenv("DOCKER_HOST"), "DOCKER_HOST"}
	}
	return Host{DefaultHost, "default"}
}

// ErrBadHost matches (errors.Is) an engine address or TLS setting that
// cannot work: a configuration mistake, not an engine that is down.
var ErrBadHost = errors.New("bad Docker engine address")

// ErrTooOld matches an engine whose API is older than this client speaks.
var ErrTooOld = errors.New("the Docker engine is too old")

// APIError is a non-2xx answer of the engine. Its text is worded as the
// reference worker's client (bollard) words it, which step errors quote.
type APIError struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("Docker responded with status code %d: %s", e.Status, e.Message)
}

// IsNotFound reports whether err is the engine's 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

func isConflict(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && (ae.Status == http.StatusConflict || ae.Status == http.StatusNotModified)
}

// Client speaks the Docker Engine API over plain net/http: unix socket,
// tcp, or tcp with TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH. It
// negotiates the API version with the first request. Safe for concurrent
// use.
type Client struct {
	host Host
	base string // scheme://authority, no version
	hc   *http.Client

	mu      sync.Mutex
	version string // "" until negotiated
}

// ClientOptions tune NewClient.
type ClientOptions struct {
	// Getenv reads DOCKER_TLS_VERIFY, DOCKER_CERT_PATH, DOCKER_TLS,
	// DOCKER_API_VERSION and HOME; nil means os.Getenv.
	Getenv func(string) string
	// ConnectTimeout bounds each connection attempt (0: 10 s).
	ConnectTimeout time.Duration
}

// NewClient makes a client for host. It does not connect: the first
// request does. An address it cannot use is an error matching ErrBadHost.
func NewClient(host Host, opts ClientOptions) (*Client, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	connect := opts.ConnectTimeout
	if connect <= 0 {
		connect = 10 * time.Second
	}
	bad := func(format string, args ...any) (*Client, error) {
		return nil, fmt.Errorf("%w: %s %q: %s", ErrBadHost, host.From, host.Addr, fmt.Sprintf(format, args...))
	}
	dialer := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               nil, // the engine is never reached through an HTTP proxy
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: connect,
	}
	c := &Client{host: host, hc: &http.Client{Transport: tr}}
	if v := getenv("DOCKER_API_VERSION"); v != "" {
		c.version = strings.TrimPrefix(v, "v")
	}
	scheme, rest, ok := strings.Cut(host.Addr, "://")
	if !ok {
		return bad("want unix:///path/to/docker.sock or tcp://host:port")
	}
	switch scheme {
	case "unix":
		if rest == "" {
			return bad("no socket path")
		}
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", rest)
		}
		c.base = "http://docker"
		return c, nil
	case "tcp", "http", "https":
		u, err := url.Parse("http://" + rest)
		if err != nil || u.Host == "" {
			return bad("want tcp://host:port")
		}
		useTLS, cfg, err := tlsFromEnv(getenv, scheme == "https")
		if err != nil {
			return bad("%v", err)
		}
		port := u.Port()
		if port == "" {
			port = "2375"
			if useTLS {
				port = "2376"
			}
		}
		tr.DialContext = dialer.DialContext
		authority := net.JoinHostPort(u.Hostname(), port)
		c.base = "http://" + authority
		if useTLS {
			tr.TLSClientConfig = cfg
			c.base = "https://" + authority
		}
		if p := strings.TrimSuffix(u.Path, "/"); p != "" {
			c.base += p
		}
		return c, nil
	case "ssh":
		return bad("ssh:// is not supported; forward the engine's socket (ssh -L /tmp/docker.sock:/var/run/docker.sock host) and use unix://")
	}
	return bad("scheme %s:// is not supported (unix://, tcp://)", scheme)
}

// tlsFromEnv is the Docker CLI's TLS environment: DOCKER_TLS_VERIFY (any
// value) verifies the engine against DOCKER_CERT_PATH/ca.pem (else the
// system roots); DOCKER_CERT_PATH or DOCKER_TLS alone use TLS without
// verification. The client certificate is DOCKER_CERT_PATH/{cert,key}.pem
// (~/.docker when only DOCKER_TLS_VERIFY is set).
func tlsFromEnv(getenv func(string) string, force bool) (bool, *tls.Config, error) {
	verify := getenv("DOCKER_TLS_VERIFY") != ""
	dir := getenv("DOCKER_CERT_PATH")
	if !(force || verify || dir != "" || getenv("DOCKER_TLS") != "") {
		return false, nil, nil
	}
	if dir == "" && (verify || getenv("DOCKER_TLS") != "") {
		if home := getenv("HOME"); home != "" {
			dir = filepath.Join(home, ".docker")
		}
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: !verify}
	if dir == "" {
		return true, cfg, nil
	}
	if ca, err := os.ReadFile(filepath.Join(dir, "ca.pem")); err == nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return false, nil, fmt.Errorf("%s holds no PEM certificate", filepath.Join(dir, "ca.pem"))
		}
		cfg.RootCAs = pool
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, nil, fmt.Errorf("reading the engine's CA: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := os.Stat(certFile); err == nil {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return false, nil, fmt.Errorf("loading the client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return true, cfg, nil
}

// Host is the engine address this client talks to.
func (c *Client) Host() Host { return c.host }

// Close closes idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Version is what GET /version says of the engine.
type Version struct {
	Version       string
	APIVersion    string `json:"ApiVersion"`
	MinAPIVersion string
	Os            string
	Components    []struct{ Name string }
}

// ServerVersion asks the engine for its version (and settles the API
// version on the way): the cheapest check that the engine answers.
func (c *Client) ServerVersion(ctx context.Context) (Version, error) {
	var v Version
	resp, err := c.send(ctx, http.MethodGet, c.base+"/version", nil, nil)
	if err != nil {
		return v, err
	}
	defer drain(resp.Body)
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("decoding GET /version: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version == "" {
		neg, err := negotiate(v)
		if err != nil {
			return v, err
		}
		c.version = neg
	}
	return v, nil
}

func negotiate(v Version) (string, error) {
	switch {
	case v.APIVersion == "":
		return minAPIVersion, nil
	case versionLess(v.APIVersion, minAPIVersion):
		return "", fmt.Errorf("%w: it serves API %s (engine %s); the Docker runner needs %s or newer (Docker 20.10, podman 4)", ErrTooOld, v.APIVersion, v.Version, minAPIVersion)
	}
	use := v.APIVersion
	if versionLess(maxAPIVersion, use) {
		use = maxAPIVersion
	}
	if v.MinAPIVersion != "" && versionLess(use, v.MinAPIVersion) {
		use = v.MinAPIVersion
	}
	return use, nil
}

// versionLess compares dotted numeric versions ("1.41" < "1.47").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// APIVersion is the negotiated version ("" before the first request).
func (c *Client) APIVersion() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// url is the versioned URL of path, negotiating first if need be.
func (c *Client) url(ctx context.Context, path string, query url.Values) (string, error) {
	c.mu.Lock()
	v := c.version
	c.mu.Unlock()
	if v == "" {
		if _, err := c.ServerVersion(ctx); err != nil {
			return "", err
		}
		v = c.APIVersion()
	}
	u := c.base + "/v" + v + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u, nil
}

// send makes one request and returns a 2xx response (the caller drains
// and closes its body); other answers become *APIError.
func (c *Client) send(ctx context.Context, method, u string, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("building %s request: %w", method, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach the Docker engine at %s (%s): %w", c.host.Addr, c.host.From, err)
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, nil
	}
	defer drain(resp.Body)
	return nil, apiError(method, req.URL.Path, resp)
}

func apiError(method, path string, resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var m struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &m) == nil && m.Message != "" {
		msg = m.Message
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: msg}
}

// drain reads what is left of a body (so the connection can be reused)
// and closes it.
func drain(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	body.Close()
}

// call sends in as JSON (if not nil) and decodes the answer into out (if
// not nil).
func (c *Client) call(ctx context.Context, method, path string, query url.Values, in, out any) error {
	u, err := c.url(ctx, path, query)
	if err != nil {
		return err
	}
	var body io.Reader
	var header http.Header
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		body, header = bytes.NewReader(b), http.Header{"Content-Type": {"application/json"}}
	}
	resp, err := c.send(ctx, method, u, body, header)
	if err != nil {
		return err
	}
	defer drain(resp.Body)
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("decoding %s %s: %w", method, path, err)
		}
	}
	return nil
}

// ImageExists reports whether the engine has image ref.
func (c *Client) ImageExists(ctx context.Context, ref string) (bool, error) {
	err := c.call(ctx, http.MethodGet, "/images/"+ref+"/json", nil, nil, nil)
	switch {
	case err == nil:
		return true, nil
	case IsNotFound(err):
		return false, nil
	}
	return false, err
}

// PullError is a pull the engine or the registry refused, with their
// message.
type PullError struct{ Message string }

func (e *PullError) Error() string { return e.Message }

// PullImage pulls ref (name:tag or name@digest) with the X-Registry-Auth
// value auth ("" for none), reading the engine's progress to its end.
// A failure reported inside the progress stream is a *PullError.
func (c *Client) PullImage(ctx context.Context, ref, auth string) error {
	name, tag := splitTag(ref)
	u, err := c.url(ctx, "/images/create", url.Values{"fromImage": {name}, "tag": {tag}})
	if err != nil {
		return err
	}
	header := http.Header{}
	if auth != "" {
		header.Set("X-Registry-Auth", auth)
	}
	resp, err := c.send(ctx, http.MethodPost, u, nil, header)
	if err != nil {
		var ae *APIError
		if errors.As(err, &ae) {
			return &PullError{Message: ae.Message}
		}
		return err
	}
	defer drain(resp.Body)
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("reading pull progress: %w", err)
		}
		switch {
		case msg.ErrorDetail != nil && msg.ErrorDetail.Message != "":
			return &PullError{Message: msg.ErrorDetail.Message}
		case msg.Error != "":
			return &PullError{Message: msg.Error}
		}
	}
}

// CreateContainer creates a container named name from body (the
// /containers/create JSON) and returns its id.
func (c *Client) CreateContainer(ctx context.Context, name string, body any) (string, error) {
	var created struct {
		ID string `json:"Id"`
	}
	q := url.Values{}
	if name != "" {
		q.Set("name", name)
	}
	if err := c.call(ctx, http.MethodPost, "/containers/create", q, body, &created); err != nil {
		return "", err
	}
	return created.ID, nil
}

// Attach attaches to a container's stdout and stderr (hijacking the
// connection, as `docker attach` does) and returns the multiplexed
// stream; closing it detaches. Attach before start: with logging off
// there is nothing to replay.
func (c *Client) Attach(ctx context.Context, id string) (io.ReadCloser, error) {
	u, err := c.url(ctx, "/containers/"+id+"/attach", url.Values{"stream": {"1"}, "stdout": {"1"}, "stderr": {"1"}})
	if err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, http.MethodPost, u, nil, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"tcp"}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Start starts a created container.
func (c *Client) Start(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodPost, "/containers/"+id+"/start", nil, nil, nil)
}

// Wait waits until the container is not running and returns its exit
// code. Call it after Start: a created container is "not running" too.
func (c *Client) Wait(ctx context.Context, id string) (int, error) {
	var res struct {
		StatusCode int
		Error      *struct{ Message string }
	}
	if err := c.call(ctx, http.MethodPost, "/containers/"+id+"/wait", url.Values{"condition": {"not-running"}}, nil, &res); err != nil {
		return -1, err
	}
	if res.Error != nil && res.Error.Message != "" {
		return res.StatusCode, fmt.Errorf("waiting for the container: %s", res.Error.Message)
	}
	return res.StatusCode, nil
}

// Kill sends signal (a name such as "SIGTERM") to the container's main
// process. A container that is not running is no error.
func (c *Client) Kill(ctx context.Context, id, signal string) error {
	err := c.call(ctx, http.MethodPost, "/containers/"+id+"/kill", url.Values{"signal": {signal}}, nil, nil)
	if isConflict(err) || IsNotFound(err) {
		return nil
	}
	return err
}

// Remove force-removes a container and its anonymous volumes. A container
// that is already gone is no error.
func (c *Client) Remove(ctx context.Context, id string) error {
	_, err := c.removeFound(ctx, id)
	return err
}

// removeFound is Remove that also says whether there was a container.
func (c *Client) removeFound(ctx context.Context, id string) (bool, error) {
	err := c.call(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}, "v": {"1"}}, nil, nil)
	var ae *APIError
	switch {
	case IsNotFound(err):
		return false, nil
	case errors.As(err, &ae) && ae.Status == http.StatusConflict && strings.Contains(ae.Message, "already in progress"):
		return true, nil
	}
	return err == nil, err
}

// Summary is a container as GET /containers/json lists it.
type Summary struct {
	ID     string `json:"Id"`
	Names  []string
	State  string
	Labels map[string]string
}

// List lists containers, running or not, carrying every one of labels
// ("key" or "key=value").
func (c *Client) List(ctx context.Context, labels ...string) ([]Summary, error) {
	q := url.Values{"all": {"1"}}
	if len(labels) > 0 {
		f, err := json.Marshal(map[string][]string{"label": labels})
		if err != nil {
			return nil, fmt.Errorf("encoding filter: %w", err)
		}
		q.Set("filters", string(f))
	}
	var out []Summary
	err := c.call(ctx, http.MethodGet, "/containers/json", q, nil, &out)
	return out, err
}

// State is the part of a container's inspection the runner reads.
type State struct {
	Status    string
	OOMKilled bool
	ExitCode  int
	Error     string
}

// Inspect returns a container's state.
func (c *Client) Inspect(ctx context.Context, id string) (State, error) {
	var out struct{ State State }
	err := c.call(ctx, http.MethodGet, "/containers/"+id+"/json", nil, nil, &out)
	return out.State, err
}
