// Package atomicfile writes small files that must never be seen half
// written, even after a crash or a power loss: the worker id, a spool's
// metadata, its acknowledged log offset and its saved completion, a
// workspace's current revision.
//
// A file is written under a unique temporary name in the same directory,
// synced, renamed over the target, and the directory is synced, so a
// reader sees the old content or the new, never an empty or torn file.
//
// It is not for large or streamed data (logs go through logstream's
// append-only spool), and it does not lock: concurrent writers of one
// path each win in turn.
package atomicfile
