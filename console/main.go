// Command console is the integration screen: org admins watch the portal's
// changes arrive in the sync log, by name and live; coordinators see who
// is inactive. It signs people in through Supabase Auth and reads as
// PostgREST does, so the app's row-level security decides every row.
package main

import (
	"context"
	"io"

	"github.com/alecthomas/kong"

	"github.com/likeperson/portalsync/pkg/command"
)

func main() {
	command.Main("console", run)
}

// cli is the command line; every flag can also be set by its env variable.
type cli struct {
	Serve       serveCmd            `cmd:"" default:"withargs" help:"Serve the screen (the default)."`
	Healthcheck command.Healthcheck `cmd:"" help:"Exit 0 when the local screen is ready (for container healthchecks)."`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c cli
	return command.Run(ctx, &c, "console", "portalsync console: the integration screen for org admins and coordinators.",
		args, stdout, stderr, kong.Vars{"readyz": "http://127.0.0.1:8091/readyz"})
}
