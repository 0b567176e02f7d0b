//go:build !linux

package main

// monotonicMicros: systemd runs only on Linux.
func monotonicMicros() (int64, bool) { return 0, false }
