package oneshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// spoolLock is an flock held on <root>/<key>.lock while a process owns a
// step's spool. It is taken before the spool exists, so another process
// scanning for pending spools never mistakes a spool being created for
// one left by a dead process; the kernel drops it when its holder dies.
type spoolLock struct{ f *os.File }

var errSpoolBusy = errors.New("spool is in use by another process")

func lockSpool(root, key string) (*spoolLock, error) {
	f, err := os.OpenFile(filepath.Join(root, key+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening spool lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errSpoolBusy
		}
		return nil, fmt.Errorf("locking spool: %w", err)
	}
	return &spoolLock{f: f}, nil
}

// release removes the lock file and unlocks. Removing first means a
// process that opens the same name later gets a fresh file.
func (l *spoolLock) release() {
	os.Remove(l.f.Name())
	l.f.Close()
}
