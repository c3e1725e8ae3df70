package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Body makes a request body for each try (a file is reopened, a byte
// slice re-read), so a retried upload starts from its first byte.
type Body func() (io.ReadCloser, int64, error)

// FileBody sends the file at path.
func FileBody(path string) Body {
	return func() (io.ReadCloser, int64, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, err
		}
		info, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		return f, info.Size(), nil
	}
}

// BytesBody sends b.
func BytesBody(b []byte) Body {
	return func() (io.ReadCloser, int64, error) {
		return io.NopCloser(strings.NewReader(string(b))), int64(len(b)), nil
	}
}

// rawResponse is a 2xx answer whose body the caller reads and closes.
type rawResponse struct {
	Status int
	Header http.Header
	Body   io.ReadCloser
}

// raw sends one non-JSON request with retries of transient failures. A
// 2xx answer's body is left open for the caller; timeout bounds each try
// including reading that body.
func (c *Client) raw(ctx context.Context, method, path, contentType string, body Body, timeout time.Duration, header ...string) (rawResponse, error) {
	var resp rawResponse
	err := c.retrying(ctx, method, path, func() error {
		var err error
		resp, err = c.rawOnce(ctx, method, path, contentType, body, timeout, header)
		return err
	})
	return resp, err
}

// rawOnce is one try of raw. header holds extra name, value pairs. A 304
// is an answer, not an error.
func (c *Client) rawOnce(ctx context.Context, method, path, contentType string, body Body, timeout time.Duration, header []string) (rawResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	var rd io.ReadCloser
	var size int64
	if body != nil {
		var err error
		if rd, size, err = body(); err != nil {
			cancel()
			return rawResponse{}, fmt.Errorf("opening request body: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		cancel()
		if rd != nil {
			rd.Close()
		}
		return rawResponse{}, fmt.Errorf("building request %s %s: %w", method, path, err)
	}
	if rd != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", c.ua)
	resp, err := c.hc.Do(req)
	if err != nil {
		cancel()
		var ue *url.Error
		if asURLError(err, &ue) {
			err = ue.Err
		}
		return rawResponse{}, &TransportError{Method: method, Path: path, Err: err}
	}
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && resp.StatusCode != http.StatusNotModified {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, errorSnippet))
		resp.Body.Close()
		cancel()
		return rawResponse{}, &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: errorMessage(snippet)}
	}
	return rawResponse{Status: resp.StatusCode, Header: resp.Header, Body: &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}}, nil
}

// artifactPath escapes each /-separated segment of an artifact name and
// keeps the slashes (contract §1.1).
func artifactPath(jobID, step, name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return stepPath(jobID, step, "artifacts") + "/" + strings.Join(segs, "/")
}

// UploadArtifact uploads one artifact file (contract §10).
func (c *Client) UploadArtifact(ctx context.Context, jobID, step, name, contentType string, body Body) error {
	resp, err := c.raw(ctx, http.MethodPost, artifactPath(jobID, step, name), contentType, body, DownloadTimeout)
	if err != nil {
		return fmt.Errorf("uploading artifact %s: %w", name, err)
	}
	resp.Body.Close()
	return nil
}

// DeleteArtifacts removes every artifact of a step (contract §10).
func (c *Client) DeleteArtifacts(ctx context.Context, jobID, step string) error {
	resp, err := c.raw(ctx, http.MethodDelete, stepPath(jobID, step, "artifacts"), "", nil, c.timeout)
	if err != nil {
		return fmt.Errorf("deleting artifacts: %w", err)
	}
	resp.Body.Close()
	return nil
}

// State downloads a task-state snapshot (contract §1.10); ok is false
// when there is none (204). The caller closes the body.
func (c *Client) State(ctx context.Context, ws, task string) (io.ReadCloser, bool, error) {
	return c.stateGet(ctx, "/worker/state/"+url.PathEscape(ws)+"/"+url.PathEscape(task))
}

// GlobalState downloads the workspace-state snapshot.
func (c *Client) GlobalState(ctx context.Context, ws string) (io.ReadCloser, bool, error) {
	return c.stateGet(ctx, "/worker/global-state/"+url.PathEscape(ws))
}

func (c *Client) stateGet(ctx context.Context, path string) (io.ReadCloser, bool, error) {
	resp, err := c.raw(ctx, http.MethodGet, path, "", nil, DownloadTimeout)
	if err != nil {
		return nil, false, fmt.Errorf("downloading state: %w", err)
	}
	if resp.Status == http.StatusNoContent {
		resp.Body.Close()
		return nil, false, nil
	}
	return resp.Body, true, nil
}

// UploadState uploads a task-state tar.gz for the job (contract §1.10).
func (c *Client) UploadState(ctx context.Context, ws, task, jobID string, hasJSON bool, body Body) error {
	path := fmt.Sprintf("/worker/state/%s/%s/%s?has_json=%t", url.PathEscape(ws), url.PathEscape(task), url.PathEscape(jobID), hasJSON)
	return c.stateUpload(ctx, path, body)
}

// UploadGlobalState uploads a workspace-state tar.gz for the job.
func (c *Client) UploadGlobalState(ctx context.Context, ws, jobID string, hasJSON bool, body Body) error {
	path := fmt.Sprintf("/worker/global-state/%s/%s?has_json=%t", url.PathEscape(ws), url.PathEscape(jobID), hasJSON)
	return c.stateUpload(ctx, path, body)
}

func (c *Client) stateUpload(ctx context.Context, path string, body Body) error {
	resp, err := c.raw(ctx, http.MethodPost, path, "application/gzip", body, DownloadTimeout)
	if err != nil {
		return fmt.Errorf("uploading state: %w", err)
	}
	resp.Body.Close()
	return nil
}
