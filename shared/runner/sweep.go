package runner

import (
	"context"
	"errors"
)

// Sweeper is a runner that can find what dead workers of this worker home
// left running (containers, pods) by their labels. lock takes the lock of
// a step's spool (delivery.Deliverer.Own) and fails while a live worker
// process owns the step; what it can lock is a leftover.
type Sweeper interface {
	Sweep(ctx context.Context, lock func(key string) (unlock func(), err error)) (int, error)
}

// Sweep runs every runner of the set that is a Sweeper and returns how
// many leftovers they removed.
func (s Set) Sweep(ctx context.Context, lock func(key string) (unlock func(), err error)) (int, error) {
	n := 0
	var errs []error
	for _, r := range s {
		if sw, ok := r.(Sweeper); ok {
			k, err := sw.Sweep(ctx, lock)
			n += k
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}
