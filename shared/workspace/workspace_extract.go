package workspace

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits cap what one archive may hold.
type Limits struct {
	MaxBytes   int64 // total bytes of file contents
	MaxEntries int
}

// DefaultLimits are generous for source trees and stop archive bombs.
var DefaultLimits = Limits{MaxBytes: 2 << 30, MaxEntries: 200_000}

// ErrUnsafeArchive marks an archive refused for safety; the message names
// the entry.
var ErrUnsafeArchive = errors.New("unsafe workspace archive")

// Extract unpacks a gzip'd tar into dir, which must exist and be empty.
func Extract(r io.Reader, dir string, lim Limits) error {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultLimits.MaxBytes
	}
	if lim.MaxEntries <= 0 {
		lim.MaxEntries = DefaultLimits.MaxEntries
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("reading workspace archive: %w", err)
	}
	defer zr.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("opening extraction directory: %w", err)
	}
	defer root.Close()
	tr := tar.NewReader(zr)
	var total int64
	var links []string
	for entries := 0; ; entries++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading workspace archive: %w", err)
		}
		if entries >= lim.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrUnsafeArchive, lim.MaxEntries)
		}
		name, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue // the archive root "./"
		}
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
			if err := root.Chmod(name, mode|0o700); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
		case tar.TypeReg:
			if hdr.Size < 0 || total+hdr.Size > lim.MaxBytes {
				return fmt.Errorf("%w: contents exceed %d bytes at %q", ErrUnsafeArchive, lim.MaxBytes, hdr.Name)
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode|0o600)
			if err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
			n, err := io.Copy(f, io.LimitReader(tr, hdr.Size))
			cerr := f.Close()
			if err == nil {
				err = cerr
			}
			if err == nil && n != hdr.Size {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
			total += n
			// Keep the exec bits: source scripts are run directly.
			if err := root.Chmod(name, mode|0o600); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			if err := checkLinkTarget(name, hdr.Linkname); err != nil {
				return err
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
			links = append(links, name)
		case tar.TypeLink:
			target, err := cleanName(hdr.Linkname)
			if err != nil || target == "" {
				return fmt.Errorf("%w: hard link %q points to %q", ErrUnsafeArchive, hdr.Name, hdr.Linkname)
			}
			if err := mkParent(root, name); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("extracting %q: %w", hdr.Name, err)
			}
		case tar.TypeXGlobalHeader, tar.TypeXHeader:
		default:
			return fmt.Errorf("%w: %q is a %s, only files, directories and links are allowed", ErrUnsafeArchive, hdr.Name, typeName(hdr.Typeflag))
		}
	}
	// Links are checked again once the tree is complete: a target that
	// looks contained on paper may leave the tree through another link.
	realRoot, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("resolving extraction directory: %w", err)
	}
	for _, l := range links {
		if err := checkResolved(realRoot, l); err != nil {
			return err
		}
	}
	return nil
}

// cleanName turns an entry name into a clean relative path, refusing
// absolute paths and any ".." element.
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: entry %q has an absolute or invalid path", ErrUnsafeArchive, name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: entry %q leaves the workspace with ..", ErrUnsafeArchive, name)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

// checkLinkTarget refuses absolute targets and targets that leave the
// tree when resolved lexically from the link's directory.
func checkLinkTarget(name, target string) error {
	if target == "" || path.IsAbs(target) {
		return fmt.Errorf("%w: link %q points to %q, outside the workspace", ErrUnsafeArchive, name, target)
	}
	joined := path.Join(path.Dir(name), target)
	if joined == ".." || strings.HasPrefix(joined, "../") {
		return fmt.Errorf("%w: link %q points to %q, outside the workspace", ErrUnsafeArchive, name, target)
	}
	return nil
}

// checkResolved follows a link through the finished tree; it must end
// inside realRoot. A dangling link is checked from its resolved parent.
func checkResolved(realRoot, name string) error {
	full := filepath.Join(realRoot, filepath.FromSlash(name))
	resolved, err := filepath.EvalSymlinks(full)
	if err != nil {
		parent, perr := filepath.EvalSymlinks(filepath.Dir(full))
		target, lerr := os.Readlink(full)
		if perr != nil || lerr != nil {
			return fmt.Errorf("%w: link %q cannot be resolved: %v", ErrUnsafeArchive, name, err)
		}
		resolved = filepath.Join(parent, target)
	}
	if resolved != realRoot && !strings.HasPrefix(resolved, realRoot+string(filepath.Separator)) {
		return fmt.Errorf("%w: link %q resolves outside the workspace", ErrUnsafeArchive, name)
	}
	return nil
}

func mkParent(root *os.Root, name string) error {
	if dir := path.Dir(name); dir != "." {
		return root.MkdirAll(dir, 0o755)
	}
	return nil
}

func typeName(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "named pipe"
	default:
		return fmt.Sprintf("entry of type %q", t)
	}
}
