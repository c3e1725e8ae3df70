package main

import (
	"fmt"
	"github.com/alecthomas/kong"
	"runtime"
	"runtime/debug"
)

// VersionCmd is `stroem-worker version` (also --version).
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run(g *Globals) error {
	fmt.Fprintln(g.stdout, versionLine())
	return nil
}

// versionLine is the version, the commit it was built from (the module's
// build info: go build stamps it in a git checkout), the Go release and
// the platform.
func versionLine() string {
	commit := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, at, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = ", modified"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			commit = fmt.Sprintf("commit %s %s%s, ", rev, at, dirty)
		}
	}
	return fmt.Sprintf("stroem-worker %s (%s%s, %s/%s)", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// versionFlag is --version: the version line, then exit 0.
type versionFlag bool

// BeforeReset prints the version before kong validates anything else, so
// --version works with any other flags or none.
func (versionFlag) BeforeReset(app *kong.Kong) error {
	fmt.Fprintln(app.Stdout, versionLine())
	app.Exit(0)
	return nil
}
