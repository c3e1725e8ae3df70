package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Durability says what must survive a power loss. Each fsync costs
// milliseconds on ordinary disks, on the path of every step: ask for what
// the reader needs and no more.
type Durability int

const (
	// Volatile: a reader after a power loss may find the old content, the
	// new one, or (rarely) an empty file; fine for what can be rebuilt.
	Volatile Durability = iota
	// Whole: the file is synced before it takes the name, so after a power
	// loss the name holds the whole new content or the old one (or is
	// missing if it was new), never a torn or empty file.
	Whole
	// Durable: Whole, and the directory is synced too, so the new content
	// is there after a power loss.
	Durable
)

// Write replaces path with data, mode 0600 (files the worker keeps may
// hold ids or results that are nobody else's business).
func Write(path string, data []byte, d Durability) error {
	sync := d >= Whole
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return fmt.Errorf("syncing %s: %w", path, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if d >= Durable {
		return SyncDir(dir)
	}
	return nil
}

// SyncDir makes the entries of dir (a created, renamed or removed file)
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
