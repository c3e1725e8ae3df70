package fakeserver

import (
	"bytes"
	"context"
	"maps"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Fault is what to do to one request instead of, before or after
// handling it. The zero Fault means behave normally.
//
// Status, Delay and Drop act before the request is handled, as a proxy or
// a dying server would: nothing is committed. DelayAnswer and DropAnswer
// act after: the server commits what the request asks (a claim, a log
// batch, a complete) and the answer is then late or lost, as when a
// connection breaks or the client's timeout runs out mid-answer. A client
// that retries then repeats a request that already took effect.
type Fault struct {
	// Status, when non-zero, is answered with Body as plain text instead
	// of handling the request.
	Status int
	Body   string
	// Delay is waited first (or until the client gives up); with no
	// Status and no Drop the request is then served normally.
	Delay time.Duration
	// Drop closes the connection without any answer or handling.
	Drop bool
	// DelayAnswer handles the request, then holds its answer back this
	// long, or until the client gives up, before sending it. Ignored with
	// Status or Drop.
	DelayAnswer time.Duration
	// DropAnswer handles the request, then (after DelayAnswer) closes
	// the connection without sending the answer. Ignored with Status or
	// Drop.
	DropAnswer bool
}

// after reports whether f acts after the request is handled.
func (f Fault) after() bool {
	return f.Status == 0 && !f.Drop && (f.DropAnswer || f.DelayAnswer > 0)
}

// SetFault installs f, asked once per request before authentication;
// nil removes it.
func (s *Server) SetFault(f func(*http.Request) Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Down makes every request get a dropped connection while down is true,
// like a server that is restarting behind a load balancer.
func (s *Server) Down(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
	s.bumpLocked()
}

func (s *Server) faultFor(r *http.Request) Fault {
	s.mu.Lock()
	down, f := s.down, s.fault
	s.mu.Unlock()
	if down {
		return Fault{Drop: true}
	}
	if f == nil {
		return Fault{}
	}
	return f(r)
}

// RandomFailures returns a fault function for SetFault that fails a
// fraction rate of requests, reproducibly for a given seed: with status,
// or by dropping the connection when status is 0.
func RandomFailures(rate float64, seed int64, status int) func(*http.Request) Fault {
	f := Fault{Drop: true}
	if status != 0 {
		f = Fault{Status: status, Body: "injected failure"}
	}
	return RandomFaults(rate, seed, f)
}

// RandomFaults returns a fault function for SetFault that injects f into
// a fraction rate of the requests it is asked about, reproducibly for a
// given seed. Combine it with Endpoint for one endpoint's requests, e.g.
// lost answers of complete only:
//
//	lost := fakeserver.RandomFaults(0.1, 1, fakeserver.Fault{DropAnswer: true})
//	srv.SetFault(func(r *http.Request) fakeserver.Fault {
//		if srv.Endpoint(r) == "POST /worker/jobs/{id}/steps/{step}/complete" {
//			return lost(r)
//		}
//		return fakeserver.Fault{}
//	})
func RandomFaults(rate float64, seed int64, f Fault) func(*http.Request) Fault {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	return func(*http.Request) Fault {
		mu.Lock()
		hit := rng.Float64() < rate
		mu.Unlock()
		if !hit {
			return Fault{}
		}
		return f
	}
}

// Endpoint names the route r would be served by, as registered: the
// method and the path pattern, e.g. "POST /worker/jobs/{id}/logs"; ""
// when none matches. It lets a fault function pick an endpoint without
// parsing paths.
func (s *Server) Endpoint(r *http.Request) string {
	_, pattern := s.mux.Handler(r)
	return pattern
}

// heldAnswer keeps a handler's answer back for the faults that act after
// handling (Fault.after).
type heldAnswer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldAnswer) Header() http.Header { return h.header }

func (h *heldAnswer) WriteHeader(status int) {
	if h.status == 0 {
		h.status = status
	}
}

func (h *heldAnswer) Write(b []byte) (int, error) {
	h.WriteHeader(http.StatusOK)
	return h.body.Write(b)
}

// send writes the held answer to w.
func (h *heldAnswer) send(w http.ResponseWriter) {
	maps.Copy(w.Header(), h.header)
	w.WriteHeader(h.status)
	w.Write(h.body.Bytes())
}

// wait waits d or until ctx ends.
func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
