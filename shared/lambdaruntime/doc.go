// Package lambdaruntime is a client of the AWS Lambda Runtime API, the
// loop a custom runtime (`bootstrap`) runs: take the next invocation,
// answer it, repeat. It is the few HTTP calls the worker needs, written
// out instead of aws-lambda-go, whose package init (net/rpc, encoding/gob)
// every process of this binary would pay, Lambda or not.
//
// It is not a handler framework: the caller decides what an invocation
// does and what its answer is.
package lambdaruntime
