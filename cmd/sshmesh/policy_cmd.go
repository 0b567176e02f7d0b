package main

import (
	"context"
	"errors"
)

// cmdPolicy implements `sshmesh policy check|explain`.
func cmdPolicy(ctx context.Context, args []string, io stdio) error { return errors.New("not yet") }
