// Command ingress receives signed membership webhooks from the Min Side
// portal and stores them in JetStream. `ingress send` posts a signed sample
// event, for portal integrators.
package main

import (
	"context"
	"io"

	"github.com/alecthomas/kong"

	"github.com/likeperson/portalsync/pkg/command"
)

func main() {
	command.Main("ingress", run)
}

// cli is the command line; every flag can also be set by its env variable.
type cli struct {
	Serve       serveCmd            `cmd:"" default:"withargs" help:"Receive webhooks (the default)."`
	Send        sendCmd             `cmd:"" help:"Post a signed event to an ingress, as the portal does."`
	Genkey      genkeyCmd           `cmd:"" help:"Print a new random webhook secret (whsec_...)."`
	Healthcheck command.Healthcheck `cmd:"" help:"Exit 0 when the local service is ready (for container healthchecks)."`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	return command.Run(ctx, &c, "ingress", "portalsync ingress: signed portal webhooks into JetStream.", args, stdout, stderr, kong.Vars{"readyz": "http://127.0.0.1:9080/readyz"})
}
