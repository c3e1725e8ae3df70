package oneshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/logstream"
)

// completionSentFile marks a spool whose completion was delivered but
// whose logs were not, so the step is not reported a second time.
const completionSentFile = "complete.sent"

func markCompletionSent(dir string) {
	_ = os.WriteFile(filepath.Join(dir, completionSentFile), nil, 0o600)
}

// DiedMessage is the error reported for a step whose worker process died
// before it reported the step's result.
func DiedMessage(step, cause string) string {
	return fmt.Sprintf("worker process for step %s died: %s", step, cause)
}

// deliverPending delivers every spool left by an earlier process that is
// no longer running: remaining logs first, then the completion. A spool
// without a saved completion belongs to a process that died mid-step;
// the step is reported failed. Token rejection stops everything; other
// failures leave the spool for the next run and only log.
func (r *runner) deliverPending(ctx context.Context) error {
	// Bounded: a server that is down, or a rotated token, must not keep a
	// cron run from exiting.
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DeliveryTimeout())
	defer cancel()
	n, err := DeliverPending(ctx, r.spoolRoot(), r.client, r.log, "the process was gone when the spool was found")
	if n > 0 {
		r.log.Info("delivered results left by earlier runs", "steps", n)
	}
	return err
}

// DeliverPending is deliverPending for any caller with a client (the
// supervisor uses it at start and for dead children). It returns how many
// spools were delivered.
func DeliverPending(ctx context.Context, root string, client *api.Client, log *slog.Logger, cause string) (int, error) {
	dirs, err := logstream.Pending(root)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("listing pending spools: %w", err)
	}
	delivered := 0
	for _, dir := range dirs {
		err := DeliverSpool(ctx, root, dir, client, cause)
		switch {
		case err == nil:
			delivered++
		case errors.Is(err, errSpoolBusy):
		case errors.Is(err, api.ErrUnauthorized):
			return delivered, err
		default:
			log.Warn("could not deliver a pending spool; will try again", "dir", dir, "error", err.Error())
		}
	}
	return delivered, nil
}

// DeliverSpool delivers one spool if no live process owns it.
func DeliverSpool(ctx context.Context, root, dir string, client *api.Client, cause string) error {
	lock, err := lockSpool(root, filepath.Base(dir))
	if err != nil {
		return err
	}
	defer lock.release()
	return deliverSpoolLocked(ctx, dir, client, cause)
}

// deliverSpoolLocked is DeliverSpool for a caller that holds the lock.
func deliverSpoolLocked(ctx context.Context, dir string, client *api.Client, cause string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		// Its owner delivered and removed it after the listing.
		return nil
	}
	sp, err := logstream.Open(dir)
	if err != nil {
		return fmt.Errorf("opening spool: %w", err)
	}
	meta := sp.Meta()
	if _, err := logstream.Ship(ctx, sp, logstream.ShipOptions{
		StepName: meta.StepName,
		Send: func(ctx context.Context, body []byte) error {
			return client.PostLogs(ctx, meta.JobID, body)
		},
		Permanent: api.IsPermanent,
	}); err != nil {
		return fmt.Errorf("delivering logs of %s/%s: %w", meta.JobID, meta.StepName, err)
	}
	if _, err := os.Stat(filepath.Join(dir, completionSentFile)); err != nil {
		body, ok := sp.Completion()
		if !ok {
			msg := DiedMessage(meta.StepName, cause)
			body, _ = json.Marshal(api.CompleteRequest{ExitCode: -1, Error: &msg})
		}
		err := client.CompleteRaw(ctx, meta.JobID, meta.StepName, body)
		switch {
		case err == nil:
		case api.IsPermanent(err):
			// The server will never take it (a 4xx other than 401, 408,
			// 429): keeping the spool would retry it on every run forever.
			sp.Remove()
			return fmt.Errorf("result of %s/%s refused for good, spool removed: %w", meta.JobID, meta.StepName, err)
		default:
			return fmt.Errorf("delivering result of %s/%s: %w", meta.JobID, meta.StepName, err)
		}
	}
	return sp.Remove()
}
