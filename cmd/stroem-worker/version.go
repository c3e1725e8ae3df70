package main

import (
	"fmt"
	"runtime"
)

// VersionCmd is `stroem-worker version`.
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run(g *Globals) error {
	fmt.Fprintf(g.stdout, "stroem-worker %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
