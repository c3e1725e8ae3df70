package dockertest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/stroem-worker/stroem-worker/shared/runner/docker/dockertest"
)

// This file is a deliberately small Engine API client for the harness's
// own tests and benchmarks; the runner has its own (docker.Client).

type container struct {
	Image      string
	Entrypoint []string
	Cmd        []string
	Binds      []string
	LogType    string // "" keeps the engine's default (json-file)
}

func (c container) body() map[string]any {
	host := map[string]any{"NetworkMode": "none"}
	if len(c.Binds) > 0 {
		host["Binds"] = c.Binds
	}
	if c.LogType != "" {
		host["LogConfig"] = map[string]any{"Type": c.LogType}
	}
	body := map[string]any{
		"Image":        c.Image,
		"AttachStdout": true,
		"AttachStderr": true,
		"HostConfig":   host,
	}
	if c.Entrypoint != nil {
		body["Entrypoint"] = c.Entrypoint
	}
	if c.Cmd != nil {
		body["Cmd"] = c.Cmd
	}
	return body
}

// call sends a request to eng and decodes a JSON answer into out.
func call(ctx context.Context, eng *dockertest.Engine, method, path string, query url.Values, in, out any) error {
	resp, err := send(ctx, eng, method, path, query, in)
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

func send(ctx context.Context, eng *dockertest.Engine, method, path string, query url.Values, in any) (*http.Response, error) {
	u := "http://docker/v" + eng.APIVersion() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := eng.HTTPClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return resp, nil
}

func create(ctx context.Context, eng *dockertest.Engine, c container) (string, error) {
	var created struct {
		ID string `json:"Id"`
	}
	if err := call(ctx, eng, http.MethodPost, "/containers/create", nil, c.body(), &created); err != nil {
		return "", err
	}
	return created.ID, nil
}

func start(ctx context.Context, eng *dockertest.Engine, id string) error {
	return call(ctx, eng, http.MethodPost, "/containers/"+id+"/start", nil, nil, nil)
}

func wait(ctx context.Context, eng *dockertest.Engine, id string) (int, error) {
	var res struct {
		StatusCode int
		Error      *struct{ Message string }
	}
	if err := call(ctx, eng, http.MethodPost, "/containers/"+id+"/wait", nil, nil, &res); err != nil {
		return -1, err
	}
	if res.Error != nil && res.Error.Message != "" {
		return res.StatusCode, fmt.Errorf("waiting for %.12s: %s", id, res.Error.Message)
	}
	return res.StatusCode, nil
}

func remove(ctx context.Context, eng *dockertest.Engine, id string) error {
	return call(ctx, eng, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}}, nil, nil)
}

// run is create → attach → start → demultiplex until the streams close →
// wait → remove. Attaching before start loses nothing.
func run(ctx context.Context, eng *dockertest.Engine, c container, stdout, stderr io.Writer) (exit int, err error) {
	id, err := create(ctx, eng, c)
	if err != nil {
		return -1, err
	}
	defer func() {
		if rmErr := remove(context.WithoutCancel(ctx), eng, id); rmErr != nil && err == nil {
			err = rmErr
		}
	}()
	attach, err := send(ctx, eng, http.MethodPost, "/containers/"+id+"/attach",
		url.Values{"stream": {"1"}, "stdout": {"1"}, "stderr": {"1"}}, nil)
	if err != nil {
		return -1, err
	}
	defer attach.Body.Close()
	if err := start(ctx, eng, id); err != nil {
		return -1, err
	}
	if _, err := demux(attach.Body, stdout, stderr); err != nil {
		return -1, fmt.Errorf("reading output: %w", err)
	}
	return wait(ctx, eng, id)
}

// runOutput runs c and returns its exit code and both streams.
func runOutput(ctx context.Context, eng *dockertest.Engine, c container) (int, string, string, error) {
	var stdout, stderr strings.Builder
	exit, err := run(ctx, eng, c, &stdout, &stderr)
	return exit, stdout.String(), stderr.String(), err
}

// demux splits the engine's multiplexed stream (what the SDK's
// stdcopy.StdCopy reads): frames of an 8-byte header {stream, 0, 0, 0,
// big-endian uint32 size} and size bytes of payload.
func demux(r io.Reader, stdout, stderr io.Writer) (int64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var hdr [8]byte
	var n int64
	for {
		if _, err := io.ReadFull(br, hdr[:]); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, fmt.Errorf("reading frame header: %w", err)
		}
		size := int64(binary.BigEndian.Uint32(hdr[4:]))
		var w io.Writer
		switch hdr[0] {
		case 0, 1:
			w = stdout
		case 2:
			w = stderr
		case 3: // the engine's own error, e.g. a failing log driver
			msg, _ := io.ReadAll(io.LimitReader(br, size))
			return n, fmt.Errorf("engine error in stream: %s", msg)
		default:
			return n, fmt.Errorf("unknown stream %d in frame header", hdr[0])
		}
		m, err := io.CopyN(w, br, size)
		n += m
		if err != nil {
			return n, fmt.Errorf("reading frame: %w", err)
		}
	}
}
