package fakeserver

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

type workspace struct {
	current  string
	tarballs map[string][]byte // servable revisions: the server's tarball cache (§9.1)
}

// EmptyTarball returns a gzip'd tar with no entries.
func EmptyTarball() []byte {
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	tw.Close()
	gz.Close()
	return b.Bytes()
}

// AddWorkspace makes revision the current revision of workspace name,
// served as tarball (a gzip'd tar). An empty revision is the SHA-256 of
// the tarball in hex, 64 characters like the server's folder hashes.
// Older revisions stay servable until DropRevision. It returns revision.
func (s *Server) AddWorkspace(name, revision string, tarball []byte) string {
	if revision == "" {
		sum := sha256.Sum256(tarball)
		revision = hex.EncodeToString(sum[:])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.workspaces[name]
	if ws == nil {
		ws = &workspace{tarballs: map[string][]byte{}}
		s.workspaces[name] = ws
	}
	ws.current = revision
	ws.tarballs[revision] = bytes.Clone(tarball)
	s.bumpLocked()
	return revision
}

// Revision returns the current revision of workspace name.
func (s *Server) Revision(name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.workspaces[name]
	if ws == nil {
		return "", false
	}
	return ws.current, true
}

// DropRevision prunes revision from the tarball cache of workspace name,
// as retention does (§9.1): a pinned download of it then gets 404. The
// current revision stays servable, since the server rebuilds it.
func (s *Server) DropRevision(name, revision string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ws := s.workspaces[name]; ws != nil && revision != ws.current {
		delete(ws.tarballs, revision)
		s.bumpLocked()
	}
}

// handleWorkspace is GET /worker/workspace/{ws}[.tar.gz][?revision=R]
// (§9.1). If-None-Match is compared after trimming quotes; no weak tags
// or lists.
func (s *Server) handleWorkspace(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSuffix(r.PathValue("ws"), ".tar.gz")
	inm := strings.Trim(r.Header.Get("If-None-Match"), `"`)
	pinned := r.URL.Query().Get("revision")
	s.mu.Lock()
	ws := s.workspaces[name]
	if ws == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, fmt.Sprintf("Workspace '%s' not found", name))
		return
	}
	rev := ws.current
	if pinned != "" {
		rev = pinned
	}
	body, ok := ws.tarballs[rev]
	s.mu.Unlock()
	if inm != "" && inm == rev {
		w.Header().Set("ETag", `"`+rev+`"`)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("Revision '%s' no longer available for workspace '%s'", rev, name))
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("X-Revision", rev)
	w.Header().Set("ETag", `"`+rev+`"`)
	w.WriteHeader(http.StatusOK)
	w.Write(body)
}
