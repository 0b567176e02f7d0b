package main

import (
	"context"
	"errors"
)

func cmdReplay(ctx context.Context, args []string, io stdio) error { return errors.New("not yet") }
