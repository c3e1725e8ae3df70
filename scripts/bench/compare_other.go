//go:build !linux

package main

import (
	"fmt"
	"os"
)

// compareMain needs Linux: taskstats exit records and /proc.
func compareMain() {
	fmt.Fprintln(os.Stderr, "bench: -compare runs on Linux only (it reads taskstats and /proc)")
	os.Exit(2)
}
