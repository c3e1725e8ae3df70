package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// stromAPI is the part of a Strøm server's user API (/api, no auth
// configured) the compare mode uses: queue jobs, read their state and
// timestamps, list workers. Everything it measures is taken from the
// server's view.
type stromAPI struct {
	base string // e.g. http://127.0.0.1:18080 (no /api)
	hc   *http.Client
}

func newStromAPI(base string) *stromAPI {
	return &stromAPI{base: strings.TrimRight(base, "/"), hc: &http.Client{Timeout: 30 * time.Second}}
}

func (a *stromAPI) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %.300s", method, path, resp.Status, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w (%.200s)", method, path, err, data)
	}
	return nil
}

// version is the server's own version (GET /api/config).
func (a *stromAPI) version(ctx context.Context) (string, error) {
	var c struct {
		Version string `json:"version"`
	}
	err := a.do(ctx, http.MethodGet, "/api/config", nil, &c)
	return c.Version, err
}

// tasks names the tasks of a workspace (the API names them in "id").
func (a *stromAPI) tasks(ctx context.Context, ws string) ([]string, error) {
	var raw json.RawMessage
	if err := a.do(ctx, http.MethodGet, "/api/workspaces/"+url.PathEscape(ws)+"/tasks", nil, &raw); err != nil {
		return nil, err
	}
	type task struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	var list []task
	if err := json.Unmarshal(raw, &list); err != nil {
		var wrapped struct {
			Items []task `json:"items"`
		}
		if err := json.Unmarshal(raw, &wrapped); err != nil {
			return nil, fmt.Errorf("decoding the task list: %w", err)
		}
		list = wrapped.Items
	}
	var names []string
	for _, t := range list {
		names = append(names, t.ID, t.Name)
	}
	return names, nil
}

// execute queues a job of task and returns its id.
func (a *stromAPI) execute(ctx context.Context, ws, task string, input map[string]string) (string, error) {
	if input == nil {
		input = map[string]string{}
	}
	var r struct {
		JobID string `json:"job_id"`
	}
	err := a.do(ctx, http.MethodPost, "/api/workspaces/"+url.PathEscape(ws)+"/tasks/"+url.PathEscape(task)+"/execute", map[string]any{"input": input}, &r)
	if err == nil && r.JobID == "" {
		err = fmt.Errorf("queueing %s: no job_id in the answer", task)
	}
	return r.JobID, err
}

// jobCounts are the server's job counts by status (GET /api/stats): one
// cheap query to follow a run without reading every job.
type jobCounts struct {
	Pending   int `json:"pending"`
	Running   int `json:"running"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"`
}

func (a *stromAPI) counts(ctx context.Context) (jobCounts, error) {
	var c jobCounts
	err := a.do(ctx, http.MethodGet, "/api/stats", nil, &c)
	return c, err
}

type jobDetail struct {
	JobID       string     `json:"job_id"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	CompletedAt *time.Time `json:"completed_at"`
	Steps       []struct {
		StepName     string     `json:"step_name"`
		Status       string     `json:"status"`
		StartedAt    *time.Time `json:"started_at"`
		CompletedAt  *time.Time `json:"completed_at"`
		WorkerID     *string    `json:"worker_id"`
		ErrorMessage *string    `json:"error_message"`
	} `json:"steps"`
}

func (a *stromAPI) job(ctx context.Context, id string) (jobDetail, error) {
	var j jobDetail
	err := a.do(ctx, http.MethodGet, "/api/jobs/"+url.PathEscape(id), nil, &j)
	return j, err
}

type workerRow struct {
	WorkerID      string     `json:"worker_id"`
	Name          string     `json:"name"`
	Version       string     `json:"version"`
	Status        string     `json:"status"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
}

func (a *stromAPI) workers(ctx context.Context) ([]workerRow, error) {
	var raw json.RawMessage
	if err := a.do(ctx, http.MethodGet, "/api/workers?limit=1000", nil, &raw); err != nil {
		return nil, err
	}
	var w struct {
		Items []workerRow `json:"items"`
	}
	if err := json.Unmarshal(raw, &w); err != nil || w.Items == nil {
		var list []workerRow
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("decoding the worker list: %w", err)
		}
		return list, nil
	}
	return w.Items, nil
}
