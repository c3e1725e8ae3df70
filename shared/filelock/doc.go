// Package filelock is an exclusive flock(2) on a named file, shared by
// processes on one host: the owner of a step's spool, the deliverer of a
// pending spool, the claimer that supersedes an earlier attempt.
//
// The kernel drops a lock when its holder dies, so a crashed process never
// leaves a stale lock behind. A lock file may be removed by its holder on
// Unlock; a process that opened the old file before it was removed would
// otherwise lock an inode nobody else can see, so every acquisition
// checks that the path still names the locked file, and retries if not.
//
// It is not a lock between goroutines of one process on one path (flock
// locks are per open file, so two opens in one process do exclude each
// other, but callers keep their own bookkeeping), nor a lock over NFS.
package filelock
