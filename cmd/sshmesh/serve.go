package main

import (
	"context"
	"errors"
)

func cmdServe(ctx context.Context, args []string, io stdio) error { return errors.New("not yet") }
func cmdNC(ctx context.Context, args []string, io stdio) error    { return errors.New("not yet") }
func cmdDemo(ctx context.Context, args []string, io stdio) error  { return errors.New("not yet") }
