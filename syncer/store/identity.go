package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Linking accounts to members, bans and sessions live in SECURITY DEFINER
// functions of migration 00005, so that the syncer's role needs no right on
// Supabase's auth tables and the trigger on auth.users (sign-up, e-mail
// confirmation) decides with the very same rules.

// linkMembersSQL links the members $1 to the accounts with their confirmed
// e-mail and restores kept links onto their profiles.
const linkMembersSQL = `SELECT portal_member_id, outcome FROM portalsync.link_members($1::text[])`

// applyAccessSQL bans the accounts of inactive members (deleting their
// sessions) and lifts the sync's bans of active ones.
const applyAccessSQL = `SELECT portal_member_id, change FROM portalsync.apply_access($1::text[])`

// identityNotes are the sync-log words for each outcome of linkMembersSQL
// and applyAccessSQL. None holds personal data: a shared e-mail is never
// named.
var identityNotes = map[string]string{
	"linked":   "app account linked",
	"shared":   "e-mail shared by several portal members; app account not linked",
	"revoked":  "app access revoked",
	"restored": "app access restored",
}

// identity runs one of the identity statements for the batch's members, in
// key order, and notes what changed for each.
func (b *batch) identity(ctx context.Context, sql, what string) error {
	members := sortedKeys(b.profIDs)
	rows, err := b.tx.Query(ctx, sql, members)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	type outcome struct{ Member, What string }
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[outcome])
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, o := range got {
		if note, ok := identityNotes[o.What]; ok {
			b.notes[o.Member] = append(b.notes[o.Member], note)
		}
	}
	return nil
}
