package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	pathRegister  = "/worker/register"
	pathHeartbeat = "/worker/heartbeat"
	pathClaim     = "/worker/jobs/claim"

	// errorSnippet caps how much of an error body ends up in an error.
	errorSnippet = 512
	// maxReply caps how much of a JSON reply is read.
	maxReply = 4 << 20
)

// Retry is a capped exponential backoff with jitter for transient errors.
type Retry struct {
	// Attempts is the total number of tries; 0 means until ctx ends.
	Attempts int
	Initial  time.Duration
	Max      time.Duration
}

// DefaultRetry suits calls that are repeated anyway (claim, heartbeat).
var DefaultRetry = Retry{Attempts: 4, Initial: 250 * time.Millisecond, Max: 5 * time.Second}

// Delay is the wait before try number attempt+1 (attempt counts from 1):
// the capped exponential, jittered into [d/2, d) so that many workers
// restarted together do not retry in lock step.
func (r Retry) Delay(attempt int) time.Duration {
	d := r.Initial
	for i := 1; i < attempt && d < r.Max; i++ {
		d *= 2
	}
	if r.Max > 0 && d > r.Max {
		d = r.Max
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// Options configures a Client.
type Options struct {
	BaseURL string
	Token   string
	// HTTPClient defaults to NewHTTPClient(10 s).
	HTTPClient *http.Client
	// RequestTimeout bounds one try of one request; 0 means 30 s.
	RequestTimeout time.Duration
	UserAgent      string
	Retry          Retry
	Logger         *slog.Logger
}

// Client talks to the Strøm worker API. It is safe for concurrent use.
type Client struct {
	base    string
	token   string
	hc      *http.Client
	timeout time.Duration
	ua      string
	retry   Retry
	log     *slog.Logger
}

// New builds a client. The token is kept only to set the Authorization
// header; it is never logged nor put in an error.
func New(o Options) *Client {
	c := &Client{
		base:    strings.TrimRight(o.BaseURL, "/"),
		token:   o.Token,
		hc:      o.HTTPClient,
		timeout: o.RequestTimeout,
		ua:      o.UserAgent,
		retry:   o.Retry,
		log:     o.Logger,
	}
	if c.hc == nil {
		c.hc = NewHTTPClient(10 * time.Second)
	}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	if c.ua == "" {
		c.ua = "stroem-worker"
	}
	if c.retry == (Retry{}) {
		c.retry = DefaultRetry
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// WithRetry returns a copy of the client that retries with r.
func (c *Client) WithRetry(r Retry) *Client {
	cp := *c
	cp.retry = r
	return &cp
}

// NewHTTPClient returns an HTTP client with a bounded connect time and
// keep-alive, for talking to one server.
func NewHTTPClient(connectTimeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConnsPerHost = 16
	t.ResponseHeaderTimeout = 0 // bounded per request by the context instead
	return &http.Client{Transport: t}
}

// Register adds a worker row and returns its id (contract §1.3).
func (c *Client) Register(ctx context.Context, req RegisterRequest) (string, error) {
	if req.Tags == nil {
		req.Tags = []string{}
	}
	var out RegisterResponse
	if err := c.call(ctx, http.MethodPost, pathRegister, req, &out); err != nil {
		return "", fmt.Errorf("registering worker: %w", err)
	}
	if out.WorkerID == "" {
		return "", fmt.Errorf("registering worker: %w: no worker_id", ErrBadResponse)
	}
	return out.WorkerID, nil
}

// Heartbeat keeps the worker row active (contract §1.4). A 200 does not
// prove the row exists: the server answers 200 for unknown ids.
func (c *Client) Heartbeat(ctx context.Context, workerID string) error {
	if err := c.call(ctx, http.MethodPost, pathHeartbeat, HeartbeatRequest{WorkerID: workerID}, nil); err != nil {
		return fmt.Errorf("sending heartbeat: %w", err)
	}
	return nil
}

// Claim asks for one step. It returns (nil, nil) when there is no work.
// A step whose reply lacks required fields is returned together with an
// error so that the caller can report it failed rather than strand it.
func (c *Client) Claim(ctx context.Context, req ClaimRequest) (*Step, error) {
	if req.Tags == nil {
		req.Tags = []string{}
	}
	var reply claimReply
	if err := c.call(ctx, http.MethodPost, pathClaim, req, &reply); err != nil {
		return nil, fmt.Errorf("claiming step: %w", err)
	}
	return reply.toStep()
}

// Start reports that the step's process is about to run (contract §1.6).
func (c *Client) Start(ctx context.Context, jobID, step, workerID string) error {
	if err := c.call(ctx, http.MethodPost, stepPath(jobID, step, "start"), StartRequest{WorkerID: workerID}, nil); err != nil {
		return fmt.Errorf("reporting step start: %w", err)
	}
	return nil
}

// Complete reports the step's result (contract §1.7).
func (c *Client) Complete(ctx context.Context, jobID, step string, req CompleteRequest) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding completion: %w", err)
	}
	return c.CompleteRaw(ctx, jobID, step, body)
}

// CompleteRaw sends an already encoded completion body (from a spool).
func (c *Client) CompleteRaw(ctx context.Context, jobID, step string, body []byte) error {
	if err := c.call(ctx, http.MethodPost, stepPath(jobID, step, "complete"), json.RawMessage(body), nil); err != nil {
		return fmt.Errorf("reporting step completion: %w", err)
	}
	return nil
}

// PostLogs sends one encoded LogBatch body (contract §1.8).
func (c *Client) PostLogs(ctx context.Context, jobID string, body []byte) error {
	if err := c.call(ctx, http.MethodPost, "/worker/jobs/"+url.PathEscape(jobID)+"/logs", json.RawMessage(body), nil); err != nil {
		return fmt.Errorf("sending logs: %w", err)
	}
	return nil
}

// Cancelled reports whether the job was cancelled (contract §1.9).
func (c *Client) Cancelled(ctx context.Context, jobID string) (bool, error) {
	var out CancelledResponse
	if err := c.call(ctx, http.MethodGet, "/worker/jobs/"+url.PathEscape(jobID)+"/cancelled", nil, &out); err != nil {
		return false, fmt.Errorf("checking cancellation: %w", err)
	}
	return out.Cancelled, nil
}

func stepPath(jobID, step, verb string) string {
	return "/worker/jobs/" + url.PathEscape(jobID) + "/steps/" + url.PathEscape(step) + "/" + verb
}

// call sends one JSON request with retries of transient failures and
// decodes a 2xx reply into out (when out is not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if raw, ok := in.(json.RawMessage); ok {
			body = raw
		} else if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
	}
	return c.retrying(ctx, method, path, func() error { return c.once(ctx, method, path, body, out) })
}

// retrying runs try until it succeeds, fails for good, ctx ends or the
// retry policy's attempts are used up, waiting the policy's jittered
// backoff between tries. Only transient failures are retried.
func (c *Client) retrying(ctx context.Context, method, path string, try func() error) error {
	for attempt := 1; ; attempt++ {
		err := try()
		if err == nil || !IsTransient(err) || ctx.Err() != nil {
			return err
		}
		if c.retry.Attempts > 0 && attempt >= c.retry.Attempts {
			return err
		}
		d := c.retry.Delay(attempt)
		c.log.LogAttrs(ctx, slog.LevelWarn, "request failed, retrying",
			slog.String("method", method), slog.String("path", path),
			slog.Int("attempt", attempt), slog.Duration("in", d), slog.String("error", err.Error()))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

func (c *Client) once(ctx context.Context, method, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("building request %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// url.Error repeats the full URL; keep ours short and token-free.
		var ue *url.Error
		if asURLError(err, &ue) {
			err = ue.Err
		}
		return &TransportError{Method: method, Path: path, Err: err}
	}
	defer func() {
		// Drain so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxReply))
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, errorSnippet))
		return &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: errorMessage(snippet)}
	}
	if out == nil {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return &TransportError{Method: method, Path: path, Err: fmt.Errorf("reading reply: %w", err)}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: %w: %v (body starts %q)", method, path, ErrBadResponse, err, clip(data, 80))
	}
	return nil
}

// errorMessage prefers the "error" field of a JSON error body and falls
// back to the (capped, trimmed) plain text axum sends for rejections.
func errorMessage(b []byte) string {
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		return eb.Error
	}
	return strings.TrimSpace(string(clip(b, errorSnippet)))
}

func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// asURLError unwraps the *url.Error of a failed request: it repeats the
// full URL, and ours stay short.
func asURLError(err error, target **url.Error) bool { return errors.As(err, target) }
