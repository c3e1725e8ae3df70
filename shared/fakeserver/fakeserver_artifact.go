package fakeserver

import (
	"bytes"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"
)

const (
	// maxArtifactBytes is artifact_storage.max_file_bytes' default (§10).
	maxArtifactBytes = 100 << 20
	// maxStateBytes is the state upload limit (§1.1).
	maxStateBytes = 50 << 20
)

// Artifact is one uploaded step artifact (§10).
type Artifact struct {
	ID          string
	Name        string
	ContentType string
	Data        []byte
}

type artifactKey struct{ job, step string }

// Artifacts returns the artifacts uploaded for a step, in upload order (a
// re-upload of a name replaces it in place).
func (s *Server) Artifacts(jobID, step string) []Artifact {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.artifacts[artifactKey{canonicalID(jobID), step}])
	for i := range out {
		out[i].Data = bytes.Clone(out[i].Data)
	}
	return out
}

// validSegment is the server's check of a step name or of each part of
// an artifact name (§10).
func validSegment(v string) bool {
	if v == "" || len(v) > 255 || v == "." || v == ".." || strings.ContainsAny(v, `/\`) {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func validStepName(v string) bool {
	return validSegment(v) && strings.TrimSpace(v) == v
}

func validArtifactName(v string) bool {
	if v == "" || len(v) > 255 || strings.HasPrefix(v, "/") || strings.HasPrefix(v, "-") {
		return false
	}
	for _, seg := range strings.Split(v, "/") {
		if !validSegment(seg) || strings.HasPrefix(seg, "-") {
			return false
		}
	}
	return true
}

// jobForArtifactsLocked finds a job that may still take artifacts:
// 404 unknown, 409 terminal (§10).
func (s *Server) jobForArtifactsLocked(jobID string) (*job, int, string) {
	j := s.jobs[jobID]
	switch {
	case j == nil:
		return nil, http.StatusNotFound, "Job not found"
	case j.status == JobCompleted || j.status == JobFailed || j.status == JobCancelled:
		return nil, http.StatusConflict, "Job is " + j.status + "; artifacts can no longer change"
	}
	return j, 0, ""
}

// handleUploadArtifact is POST /worker/jobs/{id}/steps/{step}/artifacts/{name}
// with the raw bytes (§10): 201, same name replaces.
func (s *Server) handleUploadArtifact(w http.ResponseWriter, r *http.Request) {
	jobID, ok := pathUUID(w, r, "id")
	if !ok {
		return
	}
	step, name := r.PathValue("step"), r.PathValue("name")
	if !validStepName(step) || !validArtifactName(name) {
		writeError(w, http.StatusBadRequest, "Invalid step or artifact name")
		return
	}
	data, _ := readBody(r)
	if len(data) > maxArtifactBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "Artifact exceeds the maximum file size")
		return
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	a := Artifact{ID: uuid.NewString(), Name: name, ContentType: ct, Data: data}
	s.mu.Lock()
	_, status, msg := s.jobForArtifactsLocked(jobID)
	if status == 0 {
		k := artifactKey{jobID, step}
		list := s.artifacts[k]
		if i := slices.IndexFunc(list, func(x Artifact) bool { return x.Name == name }); i >= 0 {
			list[i] = a
		} else {
			s.artifacts[k] = append(list, a)
		}
		s.bumpLocked()
	}
	s.mu.Unlock()
	if status != 0 {
		writeError(w, status, msg)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"id": a.ID, "name": name, "size_bytes": len(data), "content_type": ct})
}

// handleDeleteArtifacts is DELETE /worker/jobs/{id}/steps/{step}/artifacts
// (§10): 204, idempotent.
func (s *Server) handleDeleteArtifacts(w http.ResponseWriter, r *http.Request) {
	jobID, ok := pathUUID(w, r, "id")
	if !ok {
		return
	}
	s.mu.Lock()
	_, status, msg := s.jobForArtifactsLocked(jobID)
	if status == 0 {
		delete(s.artifacts, artifactKey{jobID, r.PathValue("step")})
		s.bumpLocked()
	}
	s.mu.Unlock()
	if status != 0 {
		writeError(w, status, msg)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
