package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Linking accounts to members, bans and sessions live in SECURITY DEFINER
// functions (migration 00005, made lean in 00021), so that the syncer's
// role needs no right on Supabase's auth tables and the trigger on
// auth.users (sign-up, e-mail confirmation) decides with the very same
// rules.

// identityNote is the sync-log words for an outcome of linkMembersSQL or
// applyAccessSQL (false for an outcome the log does not mention). None
// holds personal data: a shared e-mail is never named.
func identityNote(outcome string) (string, bool) {
	switch outcome {
	case "linked":
		return "app account linked", true
	case "shared":
		return "e-mail shared by several portal members; app account not linked", true
	case "revoked":
		return "app access revoked", true
	case "restored":
		return "app access restored", true
	}
	return "", false
}

// identity runs one of the identity statements for the members (sorted,
// so that rows are locked in key order) and further arguments, and adds
// what changed for each member to notes.
func identity(ctx context.Context, db DBTX, sql, what string, notes map[string][]string, members []string, args ...any) error {
	rows, err := db.Query(ctx, sql, append([]any{members}, args...)...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	type outcome struct{ Member, What string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[outcome])
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, o := range got {
		if note, ok := identityNote(o.What); ok {
			notes[o.Member] = append(notes[o.Member], note)
		}
	}
	return nil
}
