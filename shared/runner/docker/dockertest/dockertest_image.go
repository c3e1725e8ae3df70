package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// applets are linked to busybox in /bin. The list is explicit so the images
// do not change with the host's busybox build; busybox-static has them all.
var applets = []string{
	"[", "[[", "ash", "awk", "base64", "basename", "cat", "chmod", "chown", "cp", "cut",
	"date", "dd", "df", "dirname", "du", "echo", "env", "expr", "false", "find", "grep",
	"gunzip", "gzip", "head", "hostname", "id", "kill", "ln", "ls", "md5sum", "mkdir",
	"mktemp", "mv", "nproc", "od", "printenv", "printf", "ps", "pwd", "readlink",
	"realpath", "rm", "rmdir", "sed", "seq", "sh", "sha256sum", "sleep", "sort", "stat",
	"tail", "tar", "tee", "test", "timeout", "touch", "tr", "true", "uname", "uniq",
	"usleep", "wc", "which", "whoami", "xargs", "yes",
}

// entrypointScript behaves like the official runner image's
// docker/entrypoint.sh, with sh instead of bash.
const entrypointScript = `#!/bin/sh
set -e
if [ -d /etc/stroem/startup.d ]; then
  for script in /etc/stroem/startup.d/*.sh; do
    [ -f "$script" ] && . "$script"
  done
fi
exec "$@"
`

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type imageSpec struct {
	ref     string // repo:tag
	changes []string
	extra   []tarFile
}

var imageSpecs = []imageSpec{
	{
		ref:     ImageBusybox,
		changes: []string{"ENV " + defaultPath, `CMD ["/bin/sh"]`},
	},
	{
		ref: ImageEntrypoint,
		changes: []string{
			"ENV " + defaultPath,
			"WORKDIR /workspace",
			`ENTRYPOINT ["/entrypoint.sh","sh","-c"]`,
			`CMD ["echo 'Strøm runner ready'"]`,
		},
		extra: []tarFile{{name: "entrypoint.sh", mode: 0o755, body: entrypointScript}},
	},
	{
		ref:     ImageUser,
		changes: []string{"ENV " + defaultPath, "USER 1000", `CMD ["/bin/sh"]`},
	},
}

type tarFile struct {
	name     string
	mode     int64
	body     string
	dir      bool
	link     string // symlink target
	uid, gid int
}

// readBusybox returns the static busybox binary. A dynamically linked one
// would not run in an image without a libc, hence the ELF check.
func readBusybox(path string) ([]byte, error) {
	candidates := []string{path}
	if path == "" {
		candidates = []string{"/bin/busybox", "/usr/bin/busybox"}
	}
	for _, p := range candidates {
		f, err := elf.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		dynamic := false
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				dynamic = true
			}
		}
		f.Close()
		if dynamic {
			return nil, &UnavailableError{Reason: p + " is dynamically linked; install busybox-static: " + InstallHint}
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		return b, nil
	}
	return nil, &UnavailableError{Reason: fmt.Sprintf("no static busybox at %s; install it with: %s", strings.Join(candidates, " or "), InstallHint)}
}

// rootfsTar builds the image's file system: busybox with its applets,
// root and a uid 1000 user, a world-writable sticky /tmp.
func rootfsTar(busybox []byte, extra []tarFile) ([]byte, error) {
	files := []tarFile{
		{name: "bin", dir: true, mode: 0o755},
		{name: "bin/busybox", mode: 0o755, body: string(busybox)},
		{name: "dev", dir: true, mode: 0o755},
		{name: "etc", dir: true, mode: 0o755},
		{name: "etc/passwd", mode: 0o644, body: "root:x:0:0:root:/root:/bin/sh\n" +
			"user:x:1000:1000:user:/home/user:/bin/sh\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"},
		{name: "etc/group", mode: 0o644, body: "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"},
		{name: "home", dir: true, mode: 0o755},
		{name: "home/user", dir: true, mode: 0o755, uid: UserUID, gid: UserUID},
		{name: "proc", dir: true, mode: 0o755},
		{name: "root", dir: true, mode: 0o700},
		{name: "sys", dir: true, mode: 0o755},
		{name: "tmp", dir: true, mode: 0o1777},
		{name: "usr", dir: true, mode: 0o755},
		{name: "usr/bin", dir: true, mode: 0o755},
		{name: "usr/bin/env", link: "/bin/busybox"},
		{name: "workspace", dir: true, mode: 0o755},
	}
	for _, a := range applets {
		files = append(files, tarFile{name: "bin/" + a, link: "busybox"})
	}
	files = append(files, extra...)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: mtime, Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		case f.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, f.body); err != nil {
				return nil, fmt.Errorf("writing %s: %w", f.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing image tar: %w", err)
	}
	return buf.Bytes(), nil
}

func (e *Engine) importImages(ctx context.Context, busyboxPath string) error {
	busybox, err := readBusybox(busyboxPath)
	if err != nil {
		return err
	}
	for _, spec := range imageSpecs {
		rootfs, err := rootfsTar(busybox, spec.extra)
		if err != nil {
			return err
		}
		if err := e.api.importImage(ctx, spec.ref, spec.changes, rootfs); err != nil {
			return fmt.Errorf("importing %s: %w", spec.ref, err)
		}
	}
	return nil
}

// importImage is `docker import`: POST /images/create?fromSrc=- with the
// root file system as a tar body. The answer is a stream of JSON progress
// messages; a failure may arrive as an errorDetail inside a 200 answer.
// Podman 4.3 ignores repo and tag there (its query struct tags "repo" as
// `shchema`), so an image the reference does not find is tagged by the ID
// the stream reported.
func (c *apiClient) importImage(ctx context.Context, ref string, changes []string, rootfs []byte) error {
	i := strings.LastIndex(ref, ":")
	if i < 0 || i < strings.LastIndex(ref, "/") {
		return fmt.Errorf("image reference %q has no tag", ref)
	}
	repo, tag := ref[:i], ref[i+1:]
	q := url.Values{"fromSrc": {"-"}, "repo": {repo}, "tag": {tag}, "changes": changes}
	resp, err := c.do(ctx, http.MethodPost, "/images/create", q, bytes.NewReader(rootfs), "application/x-tar")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	id := ""
	dec := json.NewDecoder(resp.Body)
	for {
		var msg struct {
			Status      string `json:"status"`
			ID          string `json:"id"`
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("reading import progress: %w", err)
		}
		if msg.ErrorDetail != nil {
			return fmt.Errorf("engine: %s", msg.ErrorDetail.Message)
		}
		if msg.Error != "" {
			return fmt.Errorf("engine: %s", msg.Error)
		}
		switch {
		case msg.ID != "":
			id = msg.ID // podman
		case strings.HasPrefix(msg.Status, "sha256:"):
			id = msg.Status // docker
		}
	}
	err = c.doJSON(ctx, http.MethodGet, "/images/"+ref+"/json", nil, nil, nil)
	var ae *apiError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || id == "" {
		return err
	}
	if err := c.doJSON(ctx, http.MethodPost, "/images/"+id+"/tag", url.Values{"repo": {repo}, "tag": {tag}}, nil, nil); err != nil {
		return fmt.Errorf("tagging imported image %s: %w", id, err)
	}
	return c.doJSON(ctx, http.MethodGet, "/images/"+ref+"/json", nil, nil, nil)
}
