package oneshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/stroem-worker/stroem-worker/shared/api"
)

// workerIDFile is where a one-shot keeps its worker id between runs, so
// that a cron job does not add a worker row every minute (contract §8).
const workerIDFile = "worker-id"

// identity returns the worker id to use, and whether it was registered
// just now (then no heartbeat is needed at once: register sets it).
func (r *runner) identity(ctx context.Context, given string) (string, bool, error) {
	if given != "" {
		if _, err := uuid.Parse(given); err != nil {
			return "", false, fmt.Errorf("STROEM_WORKER_ID %q is not a UUID: %w", given, err)
		}
		return given, false, nil
	}
	path := filepath.Join(r.cfg.WorkspaceDir, workerIDFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(data))
		if _, perr := uuid.Parse(id); perr == nil {
			return id, false, nil
		}
		r.log.Warn("ignoring a malformed persisted worker id", "path", path)
	case !errors.Is(err, os.ErrNotExist):
		return "", false, fmt.Errorf("reading persisted worker id: %w", err)
	}
	id, err := r.register(ctx)
	return id, true, err
}

// register adds a worker row and persists its id for the next run.
func (r *runner) register(ctx context.Context) (string, error) {
	id, err := r.client.Register(ctx, api.RegisterRequest{
		Name:         r.cfg.WorkerName,
		Capabilities: r.cfg.Capabilities,
		Tags:         r.cfg.Tags,
		Exclusive:    r.cfg.Exclusive,
		Version:      r.version,
	})
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(filepath.Join(r.cfg.WorkspaceDir, workerIDFile), []byte(id+"\n")); err != nil {
		// Not fatal: this run has its id; the next run registers again.
		r.log.Warn("could not persist the worker id", "error", err.Error())
	}
	r.log.Info("registered worker", "worker_id", id, "name", r.cfg.WorkerName)
	return id, nil
}

// writeFileAtomic writes a 0600 file through a temporary name and rename,
// so that a concurrent reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
