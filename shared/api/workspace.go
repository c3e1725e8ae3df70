package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DownloadTimeout bounds one workspace download, as the server's own
// worker does (contract §11: tarball downloads use a fixed 600 s).
const DownloadTimeout = 600 * time.Second

// WorkspaceTarball is the answer to a workspace download.
type WorkspaceTarball struct {
	// Body is the gzip'd tar; the caller closes it. Nil when NotModified.
	Body        io.ReadCloser
	Revision    string
	NotModified bool
}

// Workspace downloads workspace ws (contract §9.1): pinned at revision
// when it is set, else the current one, with If-None-Match ifNoneMatch.
func (c *Client) Workspace(ctx context.Context, ws, revision, ifNoneMatch string) (WorkspaceTarball, error) {
	path := "/worker/workspace/" + url.PathEscape(ws) + ".tar.gz"
	if revision != "" {
		path += "?revision=" + url.QueryEscape(revision)
	}
	var header []string
	if ifNoneMatch != "" {
		header = []string{"If-None-Match", `"` + ifNoneMatch + `"`}
	}
	resp, err := c.raw(ctx, http.MethodGet, path, "", nil, DownloadTimeout, header...)
	if err != nil {
		return WorkspaceTarball{}, fmt.Errorf("downloading workspace: %w", err)
	}
	if resp.Status == http.StatusNotModified {
		resp.Body.Close()
		return WorkspaceTarball{NotModified: true, Revision: ifNoneMatch}, nil
	}
	rev := resp.Header.Get("X-Revision")
	if rev == "" {
		rev = strings.Trim(resp.Header.Get("ETag"), `"`)
	}
	return WorkspaceTarball{Body: resp.Body, Revision: rev}, nil
}

// cancelOnClose ends a request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
