package oneshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/stroem-worker/stroem-worker/shared/atomicfile"
	"github.com/stroem-worker/stroem-worker/shared/claim"
)

// workerIDFile is where a one-shot keeps its worker id between runs, so
// that a cron job does not add a worker row every minute (contract §8).
const workerIDFile = "worker-id"

// ErrBadWorkerID: STROEM_WORKER_ID (or --worker-id) is not a UUID.
var ErrBadWorkerID = errors.New("worker id is not a UUID")

// identity returns the worker id to use, and whether it was registered
// just now (then no heartbeat is needed at once: register sets it).
func (w *worker) identity(ctx context.Context, given string) (string, bool, error) {
	if given != "" {
		if _, err := uuid.Parse(given); err != nil {
			return "", false, fmt.Errorf("STROEM_WORKER_ID %q: %w: set it to a worker id the server issued (a UUID), or unset it to use the persisted one", given, ErrBadWorkerID)
		}
		return given, false, nil
	}
	path := filepath.Join(w.cfg.WorkspaceDir, workerIDFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		id := strings.TrimSpace(string(data))
		if _, perr := uuid.Parse(id); perr == nil {
			return id, false, nil
		}
		w.log.Warn("ignoring a malformed persisted worker id", "path", path)
	case !errors.Is(err, os.ErrNotExist):
		return "", false, fmt.Errorf("reading persisted worker id: %w", err)
	}
	id, err := w.register(ctx)
	return id, true, err
}

// register adds a worker row and persists its id for the next run.
func (w *worker) register(ctx context.Context) (string, error) {
	id, err := w.client.Register(ctx, claim.Registration(w.cfg, w.version))
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(filepath.Join(w.cfg.WorkspaceDir, workerIDFile), []byte(id+"\n"), atomicfile.Durable); err != nil {
		// Not fatal: this run has its id; the next run registers again.
		w.log.Warn("could not persist the worker id", "error", err.Error())
	}
	w.log.Info("registered worker", "worker_id", id, "name", w.cfg.WorkerName)
	return id, nil
}

// forgetID removes the persisted worker id if it is id, so the next run
// registers a fresh one.
func (w *worker) forgetID(id string) {
	path := filepath.Join(w.cfg.WorkspaceDir, workerIDFile)
	if data, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(data)) == id {
		os.Remove(path)
	}
}
