package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"

	"github.com/sshmesh/sshmesh/meshkey"
)

func cmdKeygen(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("keygen", "", io)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	k, err := meshkey.NewPrivate()
	if err != nil {
		return err
	}
	fmt.Fprintln(io.out, k.Base64())
	return nil
}

func cmdPubkey(ctx context.Context, args []string, io stdio) error {
	fs := newFlags("pubkey", "< private.key", io)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sc := bufio.NewScanner(io.in)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return err
		}
		return errors.New("no private key on stdin")
	}
	k, err := meshkey.ParsePrivate(sc.Text())
	if err != nil {
		return fmt.Errorf("stdin: %w", err)
	}
	fmt.Fprintln(io.out, k.Public())
	return nil
}
