package fakeserver

import (
	"math/rand/v2"
	"net/http"
	"sync"
	"time"
)

// Fault is what to do to one request instead of (or before) answering it.
// The zero Fault means behave normally.
type Fault struct {
	// Status, when non-zero, is answered with Body as plain text.
	Status int
	Body   string
	// Delay is waited first (or until the client gives up); with no
	// Status and no Drop the request is then served normally.
	Delay time.Duration
	// Drop closes the connection without any answer.
	Drop bool
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
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	return func(*http.Request) Fault {
		mu.Lock()
		hit := rng.Float64() < rate
		mu.Unlock()
		switch {
		case !hit:
			return Fault{}
		case status == 0:
			return Fault{Drop: true}
		default:
			return Fault{Status: status, Body: "injected failure"}
		}
	}
}
