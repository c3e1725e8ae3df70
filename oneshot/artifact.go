package oneshot

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"mime"
	"path/filepath"
	"strings"
	"time"

	"github.com/gabriel-vasile/mimetype"
	"github.com/stroem-worker/stroem-worker/shared/api"
)

// artifactNameProblem says why an artifact name is refused, or "" when it
// is fine (contract §10; the server applies the same rules).
func artifactNameProblem(name string) string {
	switch {
	case name == "":
		return "empty name"
	case len(name) > 255:
		return "name longer than 255 bytes"
	case strings.HasPrefix(name, "/") || strings.HasPrefix(name, "-"):
		return "name starts with / or -"
	}
	for _, seg := range strings.Split(name, "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return fmt.Sprintf("path segment %q", seg)
		case strings.HasPrefix(seg, "-"):
			return "path segment starts with -"
		}
		for _, r := range seg {
			if r < 0x20 || r == 0x7f {
				return "control character in name"
			}
		}
	}
	return ""
}

// extensionTypes is the server's own worker's fallback table (contract §10).
var extensionTypes = map[string]string{
	".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain", ".log": "text/plain",
	".json": "application/json", ".yaml": "application/yaml", ".yml": "application/yaml",
	".csv": "text/csv", ".html": "text/html", ".htm": "text/html", ".svg": "image/svg+xml",
}

// contentType sniffs a file's magic bytes; when that only says "some text"
// or "some bytes", the extension decides.
func contentType(path string) string {
	sniffed := "application/octet-stream"
	if mt, err := mimetype.DetectFile(path); err == nil {
		if base, _, err := mime.ParseMediaType(mt.String()); err == nil {
			sniffed = base
		}
	}
	if sniffed == "text/plain" || sniffed == "application/octet-stream" {
		if t, ok := extensionTypes[strings.ToLower(filepath.Ext(path))]; ok {
			return t
		}
	}
	return sniffed
}

// uploadArtifacts uploads every regular file under dir. Links and other
// non-regular files, and names the server would refuse, are skipped with
// a warning. It returns the first upload that failed after its retries.
func (w *worker) uploadArtifacts(ctx context.Context, step *api.Step, dir string, log *slog.Logger) (int, error) {
	client := w.client.WithRetry(api.Retry{Attempts: 3, Initial: 250 * time.Millisecond, Max: 500 * time.Millisecond})
	uploaded := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		name := filepath.ToSlash(rel)
		if !d.Type().IsRegular() {
			log.Warn("skipping artifact that is not a regular file", "name", name)
			return nil
		}
		if p := artifactNameProblem(name); p != "" {
			log.Warn("skipping artifact with an invalid name", "name", name, "problem", p)
			return nil
		}
		if err := client.UploadArtifact(ctx, step.JobID, step.StepName, name, contentType(path), api.FileBody(path)); err != nil {
			return err
		}
		uploaded++
		return nil
	})
	return uploaded, err
}
