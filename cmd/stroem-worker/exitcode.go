package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/stroem-worker/stroem-worker/oneshot"
	"github.com/stroem-worker/stroem-worker/shared/api"
	"github.com/stroem-worker/stroem-worker/shared/config"
	"github.com/stroem-worker/stroem-worker/shared/handoff"
	"github.com/stroem-worker/stroem-worker/supervisor"
)

// Exit codes: the contract with schedulers (Kubernetes podFailurePolicy,
// Nomad restart, systemd, cron). Values follow sysexits.h where one fits.
// Changing a value is a breaking change; the README, --help and the
// deploy examples are checked against this table by tests.
const (
	ExitOK            = 0                        // step ran and its result was delivered (any result), no work, or clean drain
	ExitInternal      = 1                        // unexpected internal error (a bug): retry is reasonable
	ExitUsage         = 2                        // usage or configuration error: never worth a retry
	ExitUnavailable   = 69                       // server unreachable (connection refused, DNS, timeouts, 5xx): retry later
	ExitNotDelivered  = handoff.ExitNotDelivered // 75: step ran but its result is not delivered yet; spooled, next run delivers it
	ExitTokenRejected = 77                       // the server rejected the worker token (401): fix the secret, no retry
)

// exitCodes is the table shown in --help and the README.
var exitCodes = []struct {
	Code    int
	Meaning string
}{
	{ExitOK, "a step ran and its result was delivered (whatever the step's own result), or no work was available (see --no-work-exit-code), or a clean drain"},
	{ExitInternal, "internal error (a bug; please report it)"},
	{ExitUsage, "usage or configuration error, or a request the server refuses as configured (HTTP 4xx): do not retry"},
	{ExitUnavailable, "server unreachable or failing (refused, timeouts, 5xx): retry later"},
	{ExitNotDelivered, "the step ran but its logs or result could not be delivered; kept in the spool, delivered by the next run"},
	{ExitTokenRejected, "the server rejected the worker token (HTTP 401): fix the secret, do not retry"},
}

func exitCodeHelp() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, e := range exitCodes {
		fmt.Fprintf(&b, "  %3d  %s\n", e.Code, e.Meaning)
	}
	return b.String()
}

// exitError carries a chosen exit code (--no-work-exit-code,
// --reflect-step-exit) through kong's error return.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// exitCode maps a command's error to the process exit code, in one place.
func exitCode(err error) int {
	var ee *exitError
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.Is(err, config.ErrInvalid), errors.Is(err, oneshot.ErrBadWorkerID), errors.Is(err, supervisor.ErrListen):
		return ExitUsage
	case errors.Is(err, api.ErrUnauthorized):
		return ExitTokenRejected
	case errors.Is(err, oneshot.ErrNotDelivered):
		return ExitNotDelivered
	case api.IsPermanent(err):
		// The server refuses the request as configured (an unknown
		// capability, an ability token in tags): retrying cannot help.
		return ExitUsage
	case errors.Is(err, api.ErrUnreachable), errors.Is(err, api.ErrBadResponse), api.IsTransient(err):
		// A 2xx with a body that is not the API's (a proxy's page) is the
		// server side failing too, not a bug here.
		return ExitUnavailable
	default:
		return ExitInternal
	}
}

// usageError marks a command-line or configuration mistake.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }
