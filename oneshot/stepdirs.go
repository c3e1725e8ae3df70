package oneshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/stroem-worker/stroem-worker/shared/filelock"
	"github.com/stroem-worker/stroem-worker/shared/runner"
)

// maxStepSlots bounds the slots tried; more steps than this at once on one
// worker home would be a leak, not a workload.
const maxStepSlots = 4096

// stepSlot is a tree of a step's own directories (artifacts, state in and
// out, global state in and out), reused from step to step. Creating and
// removing six directories per step is the costliest file work a short
// step does (on ext4, allocating an inode next to recently freed ones
// scans for them); a slot is made once and only emptied after a step.
// A slot belongs to one step at a time: its lock file (never removed) is
// held while the step runs, and the kernel drops it if the process dies.
type stepSlot struct {
	dir  string
	lock *filelock.Lock
	dirs runner.Dirs
}

// acquireStepSlot takes the first free slot under root, creating it if
// needed, and returns it empty.
func acquireStepSlot(root string) (*stepSlot, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("creating step directory: %w", err)
	}
	for n := range maxStepSlots {
		name := strconv.Itoa(n)
		l, err := filelock.TryLock(filepath.Join(root, name+".lock"), filelock.Options{})
		if errors.Is(err, filelock.ErrBusy) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("creating step directory: %w", err)
		}
		s := &stepSlot{dir: filepath.Join(root, name), lock: l}
		s.dirs = runner.Dirs{
			Artifacts: filepath.Join(s.dir, "artifacts"),
			State:     filepath.Join(s.dir, "state"), StateOut: filepath.Join(s.dir, "state-out"),
			GlobalState: filepath.Join(s.dir, "global-state"), GlobalStateOut: filepath.Join(s.dir, "global-state-out"),
		}
		// A process that died mid-step left its slot as it was.
		if err := s.empty(); err != nil {
			s.discard()
			s.lock.Unlock()
			continue
		}
		for _, p := range s.all() {
			if err := os.MkdirAll(p, 0o700); err != nil {
				l.Unlock()
				return nil, fmt.Errorf("creating step directory: %w", err)
			}
		}
		return s, nil
	}
	return nil, fmt.Errorf("creating step directory: all %d slots under %s are in use", maxStepSlots, root)
}

func (s *stepSlot) all() []string {
	return []string{s.dirs.Artifacts, s.dirs.State, s.dirs.StateOut, s.dirs.GlobalState, s.dirs.GlobalStateOut}
}

// empty removes what the step left in its directories, and the state
// archives packed beside them.
func (s *stepSlot) empty() error {
	var errs []error
	for _, p := range s.all() {
		entries, err := os.ReadDir(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(p, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(p + ".tar.gz"); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// discard moves a slot that cannot be emptied (files the worker may not
// delete, e.g. written by a container as another user) out of the way, so
// the next step gets clean directories.
func (s *stepSlot) discard() {
	os.Rename(s.dir, s.dir+".discarded-"+strconv.FormatInt(int64(os.Getpid()), 10))
}

// release empties the slot and frees it for the next step.
func (s *stepSlot) release() {
	if err := s.empty(); err != nil {
		s.discard()
	}
	s.lock.Unlock()
}
