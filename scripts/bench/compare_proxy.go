package main

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync"
)

// countingProxy sits between a worker and the server on loopback and
// counts the worker's requests by route. It is used for the idle run only:
// a hop in the path would add latency and CPU to the other figures.
type countingProxy struct {
	url   string
	close func()

	mu     sync.Mutex
	counts map[string]int
}

// ids in worker API paths become {id}, so that counts group by route.
var routeID = regexp.MustCompile(`/[0-9a-fA-F]{8}-[0-9a-fA-F-]{27,}`)

func startCountingProxy(target string) (*countingProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{url: "http://" + ln.Addr().String(), counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	// A worker stopped mid-claim cancels its request: not worth a line.
	rp.ErrorLog = log.New(io.Discard, "", 0)
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.counts[r.Method+" "+routeID.ReplaceAllString(r.URL.Path, "/{id}")]++
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	p.close = func() { hs.Close() }
	return p, nil
}

func (p *countingProxy) snapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		m[k] = v
	}
	return m
}
