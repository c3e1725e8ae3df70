// Package logstream turns a step's output into log lines, keeps them in a
// per-step spool on disk, and ships them to the server in ordered batches.
//
// Lines are split on '\n' (a trailing '\r' dropped), lines longer than a
// cap are cut into several on a UTF-8 boundary, and invalid UTF-8 is
// replaced, so reading never stops and no byte is lost. Each line is
// appended to the spool as the exact JSON record the server wants, so
// shipping copies bytes and never re-encodes. The shipper sends whole
// records in batches of at most MaxBatchBytes, in order, retries failures
// without giving up, and records how far the server has acknowledged; a
// process that dies leaves a spool another can finish with Deliver. The
// only line ever left out is one the server refuses for good (counted in
// Stats.Dropped). Memory stays bounded however much a step prints and
// however slow the server is: the backlog waits on disk, not in a queue.
//
// It is not an HTTP client (the caller gives a Sender and says which
// errors are permanent), it does not lock spools against a second process
// (the caller does), and it decides nothing about steps: masking secrets
// and parsing OUTPUT lines happen in the caller before Append, and the
// completion body is only stored, never built or sent.
package logstream
