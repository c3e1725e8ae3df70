// Package workspace keeps the local cache of Strøm workspace tarballs
// (contract §9): it downloads a revision once, extracts it safely and
// atomically into <root>/<workspace>/<revision>/, shares it between the
// steps and worker processes that use it, and prunes revisions no one uses.
//
// Extraction refuses absolute paths, "..", links that resolve outside the
// tree, device files and archive bombs (byte and entry caps), and writes
// only through an os.Root, so nothing lands outside the revision directory.
//
// Processes coordinate through flocks: one at a time downloads, extracts
// and prunes a workspace. A process waiting for another's lock (held across
// a download that may retry for minutes) stops waiting when its ctx ends,
// so cancel, deadlines and shutdown reach it.
//
// It is not an HTTP client: the download is a function the caller gives.
package workspace
