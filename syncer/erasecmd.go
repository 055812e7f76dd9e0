package main

import (
	"context"
	"fmt"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/event"
	"github.com/likeperson/portalsync/syncer/erase"
	"github.com/likeperson/portalsync/syncer/store"
)

type eraseCmd struct {
	dbFlags
	dlqFlags

	Member string `required:"" help:"The portal member ID to erase (a GUID in any form)."`
}

// Run erases the member in the database first (profile, memberships,
// roles, account locked out, log rows pseudonymized, tombstone), then
// purges the member's messages from the event and dead-letter streams. The
// tombstone keeps a replay from bringing the member back even before the
// purge; running the command again finishes an interrupted purge.
func (c *eraseCmd) Run(ctx context.Context, g *command.Globals) error {
	member := event.CanonicalID(c.Member)
	if !event.ValidID(member) {
		return fmt.Errorf("--member: not a valid portal member ID")
	}
	s, err := c.start(ctx, g)
	if err != nil {
		return err
	}
	defer s.close()
	res, eventID, err := erase.Database(ctx, store.New(s.pool), member)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Stdout, "%s (logged as %s)\n", res.Detail, eventID)

	if err := c.connect(ctx, s, "portalsync-erase"); err != nil {
		return fmt.Errorf("the database is erased; the stream purge needs NATS (run the command again): %w", err)
	}
	n, err := erase.NewPurger(s.js, c.Config().Name, c.queue(s.js)).Purge(ctx, member)
	if err != nil {
		return fmt.Errorf("the database is erased; purge the streams by running the command again: %w", err)
	}
	fmt.Fprintf(g.Stdout, "purged %d events of the member from %s and their dead letters from %s\n", n, c.Config().Name, c.DeadLetterStream)
	return nil
}
