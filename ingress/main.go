// Command ingress receives signed membership webhooks from the Min Side
// portal and stores them in JetStream. `ingress send` posts a signed sample
// event, for portal integrators.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingress:", err)
		os.Exit(1)
	}
}

// cli is the command line; every flag can also be set by its env variable.
type cli struct {
	Serve  serveCmd  `cmd:"" default:"withargs" help:"Receive webhooks (the default)."`
	Send   sendCmd   `cmd:"" help:"Post a signed event to an ingress, as the portal does."`
	Genkey genkeyCmd `cmd:"" help:"Print a new random webhook secret (whsec_...)."`
}

type globals struct {
	stdout io.Writer
	stderr io.Writer
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("ingress"),
		kong.Description("portalsync ingress: signed portal webhooks into JetStream."),
		kong.Writers(stdout, stderr),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&globals{stdout: stdout, stderr: stderr}),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
	)
	if err != nil {
		return err
	}
	return parseAndRun(parser, args)
}

// exitCode carries kong's wish to exit (after --help) out of Parse without
// ending the process, so run stays callable from tests.
type exitCode int

func parseAndRun(parser *kong.Kong, args []string) (err error) {
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
