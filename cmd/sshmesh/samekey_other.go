//go:build !unix

package main

import "github.com/sshmesh/sshmesh/meshkey"

// keyHolder is another live process of this user running the same key.
type keyHolder struct {
	PID  int
	What string
}

// holdKey finds no other processes here: the detection uses flock.
func holdKey(meshkey.Public, string) ([]keyHolder, func()) { return nil, func() {} }

func sameKeyWarning([]keyHolder) string { return "" }
