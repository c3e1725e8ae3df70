package fakeserver

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Request is one request the Server saw, as returned by Requests.
type Request struct {
	Method string
	Path   string // unescaped URL path
	Query  string // raw query
	// Status is the reply's status code; 0 when the connection was
	// dropped before handling (Fault.Drop, Down). With Fault.DropAnswer it
	// is the status the handler decided but never sent.
	Status int
	// Header is the request's headers without Authorization (never keep
	// the token), plus Content-Length when the client sent one.
	Header http.Header
	// Body is the request body, cut at 64 KiB.
	Body []byte
	// BodySize is the full length read (up to the route's limit + 1).
	BodySize int
	Time     time.Time
	// Fault is what SetFault or Down injected; zero when none.
	Fault Fault
}

// Requests returns every request seen so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, len(s.requests))
	for i, r := range s.requests {
		r.Header = r.Header.Clone()
		r.Body = bytes.Clone(r.Body)
		out[i] = r
	}
	return out
}

// recorder records the request the moment the status is decided, before
// any byte reaches the client: a test that got the reply always finds the
// request in Requests.
type recorder struct {
	http.ResponseWriter
	s       *Server
	rec     Request
	written bool
}

func (w *recorder) WriteHeader(status int) {
	if !w.written {
		w.written = true
		w.rec.Status = status
		w.s.record(w.rec)
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r)
	s.bumpLocked()
	s.mu.Unlock()
	attrs := []any{slog.String("method", r.Method), slog.String("path", r.Path), slog.Int("status", r.Status)}
	if r.Fault != (Fault{}) {
		attrs = append(attrs, slog.Any("fault", r.Fault))
	}
	s.log.Info("request", attrs...)
}

// bodyLimit is how much of a body a route may have (§1.1: 2 MiB for every
// JSON endpoint, 50 MiB for state, the artifact file limit for
// artifacts); one byte more is read so that "too big" can be told.
func bodyLimit(r *http.Request) int64 {
	p := r.URL.Path
	switch {
	case strings.Contains(p, "/artifacts/"):
		return maxArtifactBytes
	case strings.HasPrefix(p, "/worker/state/") || strings.HasPrefix(p, "/worker/global-state/"):
		return maxStateBytes
	}
	return maxJSONBody
}

// readBody returns the body ServeHTTP buffered.
func readBody(r *http.Request) ([]byte, error) { return io.ReadAll(r.Body) }

// ServeHTTP serves the worker API (/worker/...) and the dev API (/dev/...).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, bodyLimit(r)+1))
	r.Body = io.NopCloser(bytes.NewReader(body))
	h := r.Header.Clone()
	h.Del("Authorization")
	if r.ContentLength >= 0 && r.Body != http.NoBody {
		h.Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	}
	rec := Request{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: h,
		Body: bytes.Clone(body[:min(len(body), maxRecordedBody)]), BodySize: len(body),
		Time: s.now(),
	}

	// Faults come before auth, as a proxy or a dying server would.
	f := s.faultFor(r)
	rec.Fault = f
	if f.Delay > 0 {
		wait(r.Context(), f.Delay)
	}
	switch {
	case f.Drop:
		s.record(rec)
		drop(w)
		return
	case f.Status != 0:
		rw := &recorder{ResponseWriter: w, s: s, rec: rec}
		writePlain(rw, f.Status, f.Body)
		return
	case f.after():
		held := &heldAnswer{header: http.Header{}}
		s.serve(&recorder{ResponseWriter: held, s: s, rec: rec}, r)
		if f.DelayAnswer > 0 {
			wait(r.Context(), f.DelayAnswer)
		}
		if f.DropAnswer {
			drop(w)
			return
		}
		held.send(w)
		return
	}
	s.serve(&recorder{ResponseWriter: w, s: s, rec: rec}, r)
}

// serve handles a request: authentication, then the route. The request
// is recorded when its status is decided.
func (s *Server) serve(rw *recorder, r *http.Request) {
	defer func() {
		if !rw.written {
			rw.WriteHeader(http.StatusOK)
		}
	}()
	if strings.HasPrefix(r.URL.Path, "/worker/") || strings.HasPrefix(r.URL.Path, "/dev/") {
		if msg := s.checkAuth(r); msg != "" {
			writeError(rw, http.StatusUnauthorized, msg)
			return
		}
	}
	s.mux.ServeHTTP(rw, r)
}

// drop closes the connection without answering.
func drop(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 cannot hijack; aborting the handler resets the stream.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}
