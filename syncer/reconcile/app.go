package reconcile

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/likeperson/portalsync/pkg/event"
)

// DB is what the reconciler reads the app's tables through (a pool, a
// transaction).
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Profile is a member's profile fields as the app holds them.
type Profile struct {
	Member                            string
	Email, FirstName, LastName, Phone string
}

// appMemberships reads every membership of the app, with its status and
// role.
func appMemberships(ctx context.Context, db DB) (map[[2]string]Membership, error) {
	rows, err := db.Query(ctx, `SELECT p.portal_member_id, o.portal_org_id, m.status::text = 'active', coalesce(r.role::text, '')
		FROM organization_memberships m
		JOIN profiles p ON p.id = m.profile_id
		JOIN organizations o ON o.id = m.organization_id
		LEFT JOIN role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id`)
	if err != nil {
		return nil, fmt.Errorf("read app memberships: %w", err)
	}
	out := map[[2]string]Membership{}
	var ms Membership
	var role string
	_, err = pgx.ForEachRow(rows, []any{&ms.Member, &ms.Org, &ms.Active, &role}, func() error {
		ms.Role = event.Role(role)
		out[[2]string{ms.Member, ms.Org}] = ms
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read app memberships: %w", err)
	}
	return out, nil
}

// appProfiles reads every member's profile fields.
func appProfiles(ctx context.Context, db DB) (map[string]Profile, error) {
	rows, err := db.Query(ctx, `SELECT portal_member_id, coalesce(email, ''), coalesce(first_name, ''), coalesce(last_name, ''), coalesce(phone, '') FROM profiles`)
	if err != nil {
		return nil, fmt.Errorf("read app profiles: %w", err)
	}
	out := map[string]Profile{}
	var p Profile
	_, err = pgx.ForEachRow(rows, []any{&p.Member, &p.Email, &p.FirstName, &p.LastName, &p.Phone}, func() error {
		out[p.Member] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read app profiles: %w", err)
	}
	return out, nil
}
