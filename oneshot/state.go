package oneshot

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/runner"
	"github.com/stroem-worker/stroem-worker/shared/workspace"
)

var (
	statePrefix       = []byte("STATE:")
	globalStatePrefix = []byte("GLOBAL_STATE:")
)

// stateLines merges the JSON objects of STATE: and GLOBAL_STATE: stdout
// lines, later keys winning (contract §4).
type stateLines struct {
	task, global map[string]json.RawMessage
}

func (s *stateLines) add(line []byte) {
	var dst *map[string]json.RawMessage
	var rest []byte
	switch {
	case bytes.HasPrefix(line, statePrefix):
		dst, rest = &s.task, line[len(statePrefix):]
	case bytes.HasPrefix(line, globalStatePrefix):
		dst, rest = &s.global, line[len(globalStatePrefix):]
	default:
		return
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(bytes.TrimSpace(rest), &obj) != nil {
		return
	}
	if *dst == nil {
		*dst = map[string]json.RawMessage{}
	}
	for k, v := range obj {
		(*dst)[k] = v
	}
}

// downloadState fills STATE_DIR and GLOBAL_STATE_DIR from the snapshots
// the claim says exist.
func (w *worker) downloadState(ctx context.Context, step *api.Step, d runner.Dirs) error {
	get := func(fetch func() (io.ReadCloser, bool, error), dir string) error {
		body, ok, err := fetch()
		if err != nil || !ok {
			return err
		}
		defer body.Close()
		return workspace.Extract(body, dir, workspace.Limits{MaxBytes: 1 << 30})
	}
	if step.StateStorageKey != "" {
		if err := get(func() (io.ReadCloser, bool, error) { return w.client.State(ctx, step.Workspace, step.TaskName) }, d.State); err != nil {
			return fmt.Errorf("task state: %w", err)
		}
	}
	if step.GlobalStateStorageKey != "" {
		if err := get(func() (io.ReadCloser, bool, error) { return w.client.GlobalState(ctx, step.Workspace) }, d.GlobalState); err != nil {
			return fmt.Errorf("global state: %w", err)
		}
	}
	return nil
}

// uploadState writes state.json from the STATE:/GLOBAL_STATE: lines and
// uploads each out dir that is not empty.
func (w *worker) uploadState(ctx context.Context, step *api.Step, d runner.Dirs, lines *stateLines) error {
	for _, s := range []struct {
		dir    string
		values map[string]json.RawMessage
		upload func(hasJSON bool, body api.Body) error
	}{
		{d.StateOut, lines.task, func(h bool, b api.Body) error {
			return w.client.UploadState(ctx, step.Workspace, step.TaskName, step.JobID, h, b)
		}},
		{d.GlobalStateOut, lines.global, func(h bool, b api.Body) error {
			return w.client.UploadGlobalState(ctx, step.Workspace, step.JobID, h, b)
		}},
	} {
		if len(s.values) > 0 {
			data, _ := json.Marshal(s.values)
			if err := os.WriteFile(filepath.Join(s.dir, "state.json"), data, 0o600); err != nil {
				return fmt.Errorf("writing state.json: %w", err)
			}
		}
		entries, err := os.ReadDir(s.dir)
		if err != nil || len(entries) == 0 {
			continue
		}
		_, jerr := os.Stat(filepath.Join(s.dir, "state.json"))
		tarPath := s.dir + ".tar.gz"
		if err := tarDir(s.dir, tarPath); err != nil {
			return fmt.Errorf("packing state: %w", err)
		}
		if err := s.upload(jerr == nil, api.FileBody(tarPath)); err != nil {
			return err
		}
	}
	return nil
}

// tarDir writes a gzip'd tar of dir's regular files and directories.
func tarDir(dir, out string) error {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			src, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}
