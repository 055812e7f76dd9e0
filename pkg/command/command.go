// Package command runs a kong command line the same way for every binary:
// context and output writers bound, and --help returning instead of exiting
// the process, so that a binary's run function stays callable from tests.
package command

import (
	"context"
	"fmt"
	"io"

	"github.com/alecthomas/kong"
)

// Globals is bound for every command's Run method.
type Globals struct {
	Stdout io.Writer
	Stderr io.Writer
}

// exitCode carries kong's wish to exit out of Parse without ending the
// process.
type exitCode int

// Run parses args into grammar (a kong CLI struct) and runs the selected
// command. Commands' Run methods may take context.Context and *Globals.
func Run(ctx context.Context, grammar any, name, description string, args []string, stdout, stderr io.Writer) (err error) {
	parser, err := kong.New(grammar,
		kong.Name(name),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&Globals{Stdout: stdout, Stderr: stderr}),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
	)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exitCode)
			if !ok {
				panic(r)
			}
			if code != 0 {
				err = fmt.Errorf("exit status %d", code)
			}
		}
	}()
	kctx, err := parser.Parse(args)
	if err != nil {
		return err
	}
	return kctx.Run()
}
