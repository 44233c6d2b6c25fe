//go:build !race

// Package race tells tests whether the race detector is on: its
// instrumentation adds allocations that production builds do not have, so
// tests of allocation counts skip under it.
package race

// Enabled reports whether the binary was built with -race.
const Enabled = false
