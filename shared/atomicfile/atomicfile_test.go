package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stroem-worker/stroem-worker/shared/atomicfile"
)

func TestWriteReplacesWholeFileWithTightMode(t *testing.T) {
	t.Parallel()
	for _, d := range []atomicfile.Durability{atomicfile.Volatile, atomicfile.Whole, atomicfile.Durable} {
		dir := t.TempDir()
		path := filepath.Join(dir, "f")
		if err := os.WriteFile(path, []byte("old content that is longer"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := atomicfile.Write(path, []byte("new"), d); err != nil {
			t.Fatalf("Write(%d) = %v", d, err)
		}
		data, err := os.ReadFile(path)
		if err != nil || string(data) != "new" {
			t.Errorf("ReadFile = %q, %v; want %q", data, err, "new")
		}
		info, _ := os.Stat(path)
		if got := info.Mode().Perm(); got != 0o600 {
			t.Errorf("mode = %v, want 0600", got)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("directory holds %d entries, want only the file (no temporary left)", len(entries))
		}
	}
}

func TestWriteIntoMissingDirectoryFails(t *testing.T) {
	t.Parallel()
	err := atomicfile.Write(filepath.Join(t.TempDir(), "missing", "f"), []byte("x"), atomicfile.Durable)
	if err == nil {
		t.Fatal("Write into a missing directory = nil, want an error")
	}
}
