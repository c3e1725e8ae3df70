package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// Sentinels for decisions (errors.Is), never string matching.
var (
	// ErrUnauthorized: the server answered 401, the worker token was rejected.
	ErrUnauthorized = errors.New("worker token rejected by the server (HTTP 401): check worker_token")
	// ErrUnreachable: no HTTP answer at all (refused, reset, DNS, timeout).
	ErrUnreachable = errors.New("server unreachable")
	// ErrClaimRejected: claim answered 422; the server already failed the
	// step it picked (template render failure, contract §1.5). Keep polling.
	ErrClaimRejected = errors.New("server rejected the claimed step")
	// ErrBadResponse: a 2xx answer whose body is not what the API promises.
	ErrBadResponse = errors.New("server answered with an unexpected body")
)

// StatusError is a non-2xx answer. Body is a capped snippet of what the
// server said; it never contains the token, which is only sent in a header.
type StatusError struct {
	Method string
	Path   string
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	if e.Status == http.StatusUnauthorized {
		msg += " (worker token rejected: check worker_token or worker_token_file)"
	}
	return msg
}

// Is lets callers test errors.Is(err, ErrUnauthorized) and friends.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrClaimRejected:
		return e.Status == http.StatusUnprocessableEntity && e.Path == pathClaim
	}
	return false
}

// Transient reports whether retrying the same request may succeed.
func (e *StatusError) Transient() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout || e.Status >= 500
}

// TransportError is a request that got no HTTP answer.
type TransportError struct {
	Method string
	Path   string
	Err    error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("%s %s: %s: %v", e.Method, e.Path, ErrUnreachable, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// Is makes every TransportError match ErrUnreachable.
func (e *TransportError) Is(target error) bool { return target == ErrUnreachable }

// IsTransient reports whether err is worth retrying: no answer, 408, 429
// or 5xx. Cancellation by the caller's own context is not transient.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Transient()
	}
	var te *TransportError
	return errors.As(err, &te)
}

// IsUnsent reports whether err is a request that surely never reached
// the server: the connection could not be made (refused, no route, DNS).
// A request that failed later (a timeout, a reset) may have been handled.
func IsUnsent(err error) bool {
	var te *TransportError
	if !errors.As(err, &te) {
		return false
	}
	var op *net.OpError
	if errors.As(te.Err, &op) {
		return op.Op == "dial"
	}
	var dns *net.DNSError
	return errors.As(te.Err, &dns)
}

// IsPermanent reports whether the server answered and will never accept
// this request as it is (a 4xx other than 401, 408 and 429).
func IsPermanent(err error) bool {
	var se *StatusError
	if !errors.As(err, &se) {
		return false
	}
	return se.Status >= 400 && se.Status < 500 && !se.Transient() && se.Status != http.StatusUnauthorized
}

// IsFatal reports whether no retry of any request can succeed until
// someone acts: the token was rejected.
func IsFatal(err error) bool { return errors.Is(err, ErrUnauthorized) }

// IsAmbiguous reports whether a request may have taken effect on the
// server although no success came back: it was sent and no answer
// arrived (a timeout, a reset), or the answer was a 500 (the server fails
// some requests after writing), 502 or 504 (a proxy lost the server's
// answer). Resending such a request can apply it twice.
func IsAmbiguous(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status == http.StatusInternalServerError || se.Status == http.StatusBadGateway || se.Status == http.StatusGatewayTimeout
	}
	var te *TransportError
	return errors.As(err, &te) && !IsUnsent(err) && !errors.Is(err, context.Canceled)
}
