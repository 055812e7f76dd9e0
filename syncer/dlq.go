package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/syncer/deadletter"
)

type dlqCmd struct {
	List    dlqListCmd    `cmd:"" help:"List the events that could not be applied."`
	Redrive dlqRedriveCmd `cmd:"" help:"Put dead-lettered events back into the event stream to be applied again."`
}

type dlqListCmd struct {
	dlqFlags
}

func (c *dlqListCmd) Run(ctx context.Context, g *command.Globals) error {
	q, closeFn, err := c.openQueue(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	entries, err := q.List(ctx)
	if err != nil {
		return err
	}
	return printEntries(g.Stdout, entries)
}

func printEntries(w io.Writer, entries []deadletter.Entry) error {
	if len(entries) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tEVENT ID\tTYPE\tMEMBER ID\tDELIVERIES\tFAILED AT\tERROR")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Seq, e.EventID, e.EventType, e.MemberID, e.Deliveries,
			e.FailedAt.Format(time.RFC3339), oneLine(e.Error, 120))
	}
	return tw.Flush()
}

func oneLine(s string, n int) string {
	b := []rune(s)
	for i, r := range b {
		if r == '\n' || r == '\t' {
			b[i] = ' '
		}
	}
	if len(b) > n {
		return string(b[:n-1]) + "…"
	}
	return string(b)
}

type dlqRedriveCmd struct {
	dlqFlags
	Event string `placeholder:"ID" help:"Redrive the dead letters of this event id (or --all, not both)." xor:"what" required:""`
	All   bool   `help:"Redrive every dead letter (or --event, not both)." xor:"what" required:""`
}

func (c *dlqRedriveCmd) Run(ctx context.Context, g *command.Globals) error {
	q, closeFn, err := c.openQueue(ctx)
	if err != nil {
		return err
	}
	defer closeFn()
	n, err := q.Redrive(ctx, deadletter.Filter{EventID: c.Event})
	if errors.Is(err, deadletter.ErrNoneMatched) {
		if c.All {
			_, err = fmt.Fprintln(g.Stdout, "no dead letters")
			return err
		}
		return fmt.Errorf("no dead letter for event %s", c.Event)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.Stdout, "redriven %d event(s); the syncer applies them again\n", n)
	return err
}
