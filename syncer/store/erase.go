package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	"github.com/likeperson/portalsync/pkg/event"
)

// MemberHash is what is left of an erased member's ID: "erased:" and the
// hex SHA-256 of the canonical ID. It keys the tombstone and replaces the
// ID in the member's sync-log rows; it cannot be turned back into the ID.
func MemberHash(memberID string) string {
	sum := sha256.Sum256([]byte(event.CanonicalID(memberID)))
	return "erased:" + hex.EncodeToString(sum[:])
}

// eraseMembers erases the members of the batch's member-deleted events:
// the memberships end and the linked account is locked out exactly as a
// last deactivation does it (banned, sessions deleted; the account itself
// is the app's to delete), then portalsync.erase_member deletes the profile
// with its memberships and roles, replaces the member ID in its sync-log
// rows by MemberHash, and leaves a tombstone of the hash. It returns what
// it did for each of items[erasures[j]], in order.
func eraseMembers(ctx context.Context, db DBTX, items []Item, erasures []int) ([]erased, error) {
	if len(erasures) == 0 {
		return nil, nil
	}
	members := make([]string, len(erasures))
	for j, i := range erasures {
		members[j] = items[i].Event.Member.ID
	}
	profIDs, err := readIDs(ctx, db, profileIDsSQL, members)
	if err != nil {
		return nil, fmt.Errorf("read profiles to erase: %w", err)
	}
	notes := map[string][]string{}
	orgs := map[string][]orgRef{}
	if len(profIDs) > 0 {
		known := sortedKeys(profIDs)
		if orgs, err = orgsOfMembers(ctx, db, known); err != nil {
			return nil, err
		}
		ids := slices.Sorted(maps.Values(profIDs))
		if _, err := db.Exec(ctx, endMembershipsSQL, ids); err != nil {
			return nil, fmt.Errorf("end memberships to erase: %w", err)
		}
		if err := identity(ctx, db, applyAccessSQL, "lock out members to erase", notes, known); err != nil {
			return nil, err
		}
	}
	out := make([]erased, len(erasures))
	for j, i := range erasures {
		ev := items[i].Event
		hash := MemberHash(ev.Member.ID)
		if err := db.QueryRow(ctx, eraseMemberSQL, ev.Member.ID, hash, ev.ID).
			Scan(&out[j].profiles, &out[j].memberships, &out[j].logRows); err != nil {
			return nil, fmt.Errorf("erase member %s: %w", hash, err)
		}
		out[j].notes, out[j].orgs = notes[ev.Member.ID], orgs[ev.Member.ID]
	}
	return out, nil
}

// orgRef is an organization as a log row names it.
type orgRef struct{ id, portalID string }

// orgsOfMembers reads the organizations the members have a membership in
// (orgsOfMembersSQL), in key order.
func orgsOfMembers(ctx context.Context, db DBTX, members []string) (map[string][]orgRef, error) {
	rows, err := db.Query(ctx, orgsOfMembersSQL, members)
	if err != nil {
		return nil, fmt.Errorf("read organizations of members to erase: %w", err)
	}
	defer rows.Close()
	out := map[string][]orgRef{}
	for rows.Next() {
		var m string
		var o orgRef
		if err := rows.Scan(&m, &o.id, &o.portalID); err != nil {
			return nil, fmt.Errorf("read organizations of members to erase: %w", err)
		}
		out[m] = append(out[m], o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read organizations of members to erase: %w", err)
	}
	return out, nil
}
