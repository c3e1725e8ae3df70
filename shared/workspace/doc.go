// Package workspace keeps the local cache of Strøm workspace tarballs
// (contract §9): it downloads a revision once, extracts it safely and
// atomically into <root>/<workspace>/<revision>/, shares it between the
// steps and worker processes that use it, and prunes revisions no one uses.
//
// Only complete trees are used: a revision counts once its hidden
// completeness mark (<root>/<workspace>/.complete-<revision>) exists,
// written after the extracted tree was renamed into place. A tree is taken
// away by removing its mark and renaming it into <root>/.trash in one step,
// and only then deleted, directories a step made read-only included. A
// deletion that fails part way leaves nothing in view; the next Get of any
// workspace tries again. A tree without its mark is downloaded afresh.
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
