//go:build !unix

package main

import "context"

// execTailnet runs the program as a child: this system cannot replace a
// process.
func execTailnet(ctx context.Context, path string, argv []string, io stdio) error {
	return runTailnet(ctx, path, argv, io)
}
