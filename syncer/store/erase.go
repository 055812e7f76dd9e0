package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/event"
)

// MemberHash is what is left of an erased member's ID: "erased:" and the
// hex SHA-256 of the canonical ID. It keys the tombstone and replaces the
// ID in the member's sync-log rows; it cannot be turned back into the ID.
func MemberHash(memberID string) string {
	sum := sha256.Sum256([]byte(event.CanonicalID(memberID)))
	return "erased:" + hex.EncodeToString(sum[:])
}

// Erase erases one member as a member-deleted event does (see
// eraseMembers), for `syncer erase`: the event it logs has the given id and
// the current time. The member's subject in the stream and dead letters is
// the caller's to purge.
func (s *Store) Erase(ctx context.Context, memberID, eventID string) (Result, error) {
	ev := &event.Event{ID: eventID, Type: event.MemberDeleted, OccurredAt: s.now().UTC().Truncate(time.Microsecond),
		Member: event.Member{ID: event.CanonicalID(memberID)}}
	return s.Apply(ctx, ev, Meta{Attempt: 1, ReceivedAt: s.now()})
}

// eraseMembers erases the members of the batch's member-deleted events:
// the memberships end and the linked account is locked out exactly as a
// last deactivation does it (banned, sessions deleted; the account itself
// is the app's to delete), then portalsync.erase_member deletes the profile
// with its memberships and roles, replaces the member ID in its sync-log
// rows by MemberHash, and leaves a tombstone of the hash.
func (b *batch) eraseMembers(ctx context.Context) error {
	if len(b.erasures) == 0 {
		return nil
	}
	members := make([]string, 0, len(b.erasures))
	for _, i := range b.erasures {
		members = append(members, b.items[i].Event.Member.ID)
	}
	profIDs, err := b.ids(ctx, `SELECT portal_member_id, id::text FROM public.profiles WHERE portal_member_id = ANY($1)`, members)
	if err != nil {
		return fmt.Errorf("read profiles to erase: %w", err)
	}
	lockout := &batch{tx: b.tx, profIDs: profIDs}
	if len(profIDs) > 0 {
		if _, err := b.tx.Exec(ctx, `UPDATE public.organization_memberships SET status = 'inactive', updated_at = now()
			WHERE profile_id = ANY($1::text[]::uuid[]) AND status <> 'inactive'`, lockout.profileIDs()); err != nil {
			return fmt.Errorf("end memberships to erase: %w", err)
		}
		if err := lockout.accessAndStatus(ctx); err != nil {
			return fmt.Errorf("lock out members to erase: %w", err)
		}
	}
	for _, i := range b.erasures {
		ev := b.items[i].Event
		var profiles, memberships, logRows int
		if err := b.tx.QueryRow(ctx, `SELECT * FROM portalsync.erase_member($1, $2, $3)`, ev.Member.ID, MemberHash(ev.Member.ID), ev.ID).
			Scan(&profiles, &memberships, &logRows); err != nil {
			return fmt.Errorf("erase member %s: %w", MemberHash(ev.Member.ID), err)
		}
		parts := []string{"member erased"}
		if profiles == 0 {
			parts = append(parts, "the app did not know the member")
		} else {
			parts = append(parts, fmt.Sprintf("profile and %d memberships deleted", memberships))
		}
		parts = append(parts, lockout.notes[ev.Member.ID]...)
		parts = append(parts, fmt.Sprintf("member ID replaced by its hash in %d log rows", logRows))
		b.results[i].Detail = strings.Join(parts, "; ")
	}
	return nil
}
