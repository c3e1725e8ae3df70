package lambdaruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

const apiVersion = "2018-06-01"

// Invocation is one request Lambda hands the runtime.
type Invocation struct {
	RequestID string
	// Deadline is when Lambda freezes or ends the process.
	Deadline time.Time
	Payload  json.RawMessage
}

// Client talks to the Runtime API at AWS_LAMBDA_RUNTIME_API.
type Client struct {
	base string
	hc   *http.Client
}

// New returns a client of the Runtime API at host:port.
func New(api string) *Client {
	// No timeout: the next invocation may be hours away.
	return &Client{base: "http://" + api + "/" + apiVersion + "/runtime", hc: &http.Client{}}
}

// Next waits for the next invocation.
func (c *Client) Next(ctx context.Context) (Invocation, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/invocation/next", nil)
	if err != nil {
		return Invocation{}, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Invocation{}, fmt.Errorf("waiting for the next Lambda invocation: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 6<<20))
	if err != nil {
		return Invocation{}, fmt.Errorf("reading the Lambda invocation: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Invocation{}, fmt.Errorf("waiting for the next Lambda invocation: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	inv := Invocation{RequestID: resp.Header.Get("Lambda-Runtime-Aws-Request-Id"), Payload: body}
	if inv.RequestID == "" {
		return Invocation{}, errors.New("a Lambda invocation without Lambda-Runtime-Aws-Request-Id")
	}
	if ms, err := strconv.ParseInt(resp.Header.Get("Lambda-Runtime-Deadline-Ms"), 10, 64); err == nil {
		inv.Deadline = time.UnixMilli(ms)
	}
	return inv, nil
}

// Respond sends the invocation's result.
func (c *Client) Respond(ctx context.Context, requestID string, result any) error {
	body, err := json.Marshal(result)
	if err != nil {
		return fmt.Errorf("encoding the Lambda response: %w", err)
	}
	return c.post(ctx, "/invocation/"+requestID+"/response", body)
}

// Fail reports the invocation failed with err.
func (c *Client) Fail(ctx context.Context, requestID string, failure error) error {
	body, _ := json.Marshal(map[string]string{"errorMessage": failure.Error(), "errorType": "StroemWorkerError"})
	return c.post(ctx, "/invocation/"+requestID+"/error", body)
}

func (c *Client) post(ctx context.Context, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("answering the Lambda invocation: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answering the Lambda invocation: HTTP %d", resp.StatusCode)
	}
	return nil
}
