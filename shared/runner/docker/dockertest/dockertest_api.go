package dockertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// The harness asks for this Engine API version at most: 1.41 is what
// Debian's docker.io 20.10 and podman 4.3 serve, newer engines (Docker 29
// refuses anything below 1.44) get their own version up to this cap.
const (
	minAPIVersion = "1.41"
	maxAPIVersion = "1.47"
)

// apiClient is a minimal Engine API client over a unix socket.
type apiClient struct {
	hc      *http.Client
	version string // negotiated by ping; "" before
}

func newAPIClient(socket string) *apiClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression:  true,
		MaxIdleConnsPerHost: 8,
	}
	return &apiClient{hc: &http.Client{Transport: tr}}
}

// apiError is a non-2xx answer from the engine.
type apiError struct {
	Method string
	Path   string
	Status int
	Body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

func (c *apiClient) url(path string, query url.Values) string {
	u := "http://docker"
	if c.version != "" {
		u += "/v" + c.version
	}
	u += path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// do sends a request and returns the response of a 2xx answer; the caller
// closes its body. Other answers become *apiError with a capped body.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, query), body)
	if err != nil {
		return nil, fmt.Errorf("building %s %s: %w", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		io.Copy(io.Discard, resp.Body)
		return nil, &apiError{Method: method, Path: path, Status: resp.StatusCode, Body: strings.TrimSpace(string(snippet))}
	}
	return resp, nil
}

// doJSON sends in (if not nil) as JSON and decodes the answer into out
// (if not nil).
func (c *apiClient) doJSON(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	contentType := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding %s %s: %w", method, path, err)
		}
		body, contentType = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, query, body, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("decoding %s %s: %w", method, path, err)
		}
	}
	io.Copy(io.Discard, resp.Body)
	return nil
}

// ping calls GET /_ping (unversioned) and, the first time, settles the API
// version from the Api-Version header.
func (c *apiClient) ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return fmt.Errorf("building ping: %w", err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("pinging engine: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode != http.StatusOK {
		return &apiError{Method: http.MethodGet, Path: "/_ping", Status: resp.StatusCode, Body: string(body)}
	}
	if c.version == "" {
		v, err := negotiateVersion(resp.Header.Get("Api-Version"))
		if err != nil {
			return err
		}
		c.version = v
	}
	return nil
}

// errAPITooOld: the engine's newest API is older than minAPIVersion.
var errAPITooOld = errors.New("engine API too old")

func negotiateVersion(server string) (string, error) {
	if server == "" {
		return minAPIVersion, nil
	}
	if versionLess(server, minAPIVersion) {
		return "", fmt.Errorf("%w: engine serves %s, harness needs %s", errAPITooOld, server, minAPIVersion)
	}
	if versionLess(maxAPIVersion, server) {
		return maxAPIVersion, nil
	}
	return server, nil
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

type engineInfo struct {
	Driver        string
	ServerVersion string
	CgroupVersion string
	CgroupDriver  string
}

func (c *apiClient) info(ctx context.Context) (engineInfo, error) {
	var info engineInfo
	err := c.doJSON(ctx, http.MethodGet, "/info", nil, nil, &info)
	return info, err
}

func (c *apiClient) containerIDs(ctx context.Context, label string) ([]string, error) {
	q := url.Values{"all": {"1"}}
	if label != "" {
		f, err := json.Marshal(map[string][]string{"label": {label}})
		if err != nil {
			return nil, fmt.Errorf("encoding filter: %w", err)
		}
		q.Set("filters", string(f))
	}
	var list []struct {
		ID string `json:"Id"`
	}
	if err := c.doJSON(ctx, http.MethodGet, "/containers/json", q, nil, &list); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(list))
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

// removeAllContainers force-removes every container. Stop does this before
// signalling the engine because dockerd would otherwise give each running
// container its shutdown timeout.
func (c *apiClient) removeAllContainers(ctx context.Context) error {
	ids, err := c.containerIDs(ctx, "")
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	var errs []error
	for _, id := range ids {
		err := c.doJSON(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}, "v": {"1"}}, nil, nil)
		var ae *apiError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing container %.12s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}
