// Package command runs a kong command line the same way for every binary:
// context and output writers bound, and --help returning instead of exiting
// the process, so that a binary's run function stays callable from tests.
package command

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

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
func Run(ctx context.Context, grammar any, name, description string, args []string, stdout, stderr io.Writer, opts ...kong.Option) (err error) {
	parser, err := kong.New(grammar, append([]kong.Option{
		kong.Name(name),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.Bind(&Globals{Stdout: stdout, Stderr: stderr}),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
		kong.Help(printHelp),
	}, opts...)...)
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
	err = kctx.Run()
	// Asked to stop (SIGTERM) while still starting: nothing was in flight,
	// so that is a clean exit, not a failure.
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Healthcheck is a subcommand that asks a running process's readiness
// endpoint, for container healthchecks in images without a shell or curl.
// The binary sets its default URL with kong.Vars{"readyz": …}.
type Healthcheck struct {
	URL     string        `arg:"" optional:"" default:"${readyz}" help:"Readiness URL to ask (default ${readyz})."`
	Timeout time.Duration `default:"3s" help:"How long to wait for the answer."`
}

// Run fails unless the URL answers 2xx within the timeout.
func (h *Healthcheck) Run(ctx context.Context, g *Globals) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("healthcheck: %s answered %d", h.URL, resp.StatusCode)
	}
	fmt.Fprintln(g.Stdout, "ok")
	return nil
}

// ExitCode is an error that ends Main with its value as the exit status
// and no message: the command has already said why (`syncer status` exits
// 2 when degraded, 3 when a part is unreachable).
type ExitCode int

func (e ExitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// Main runs a binary's run function with a context that ends on SIGINT or
// SIGTERM, and exits 1 with "name: error" on failure (an ExitCode: its
// code, silently).
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code := ExitCode(0); errors.As(err, &code) {
		os.Exit(int(code))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Off maps a flag whose 0 means none or off (no grace, no wait, no limit,
// keep for ever) to its Config field, where 0 takes the default and a
// negative value means none.
func Off[T ~int64 | ~float64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}
