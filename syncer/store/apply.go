package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/likeperson/portalsync/pkg/event"
)

// banFor is how long a deactivated member's auth user is banned: for good,
// in the form GoTrue itself uses for an indefinite ban.
const banFor = "876000 hours"

// applyTx applies one event inside tx. Rows are touched in a fixed order
// (organization, profile, membership, role, auth user, log) so concurrent
// transactions cannot deadlock on each other.
func applyTx(ctx context.Context, tx pgx.Tx, ev *event.Event, meta Meta) (Result, error) {
	var res Result
	if !meta.Replay {
		var done string
		err := tx.QueryRow(ctx, `SELECT status FROM public.portal_sync_log
			WHERE event_id = $1 AND status IN ('success', 'skipped')`, ev.ID).Scan(&done)
		switch {
		case err == nil:
			return Result{Status: done, AlreadyDone: true}, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return res, fmt.Errorf("look up log: %w", err)
		}
	}

	if !ev.Type.Known() {
		res = Result{Status: StatusSkipped, Detail: fmt.Sprintf("unknown event type %q", truncate(string(ev.Type), 64))}
		return res, insertLog(ctx, tx, ev, meta, nil, res)
	}

	var changes []string
	note := func(s string) { changes = append(changes, s) }

	orgID, orgCreated, err := upsertOrganization(ctx, tx, ev)
	if err != nil {
		return res, err
	}
	if orgCreated {
		note("organization created")
	}

	profileID, created, err := upsertProfile(ctx, tx, ev)
	if err != nil {
		return res, err
	}
	if created {
		res.MemberCreated = true
		note("member created")
	}

	mChange, err := upsertMembership(ctx, tx, ev, profileID, orgID)
	if err != nil {
		return res, err
	}
	if mChange != "" {
		note(mChange)
	}

	if ev.Role != "" {
		set, err := upsertRole(ctx, tx, ev, profileID, orgID)
		if err != nil {
			return res, err
		}
		if set {
			note("role " + string(ev.Role))
		}
	}

	access, err := syncProfileStatus(ctx, tx, profileID)
	if err != nil {
		return res, err
	}
	if access != "" {
		note(access)
	}

	res.Status = StatusSuccess
	if len(changes) == 0 {
		res.Detail = "no change: the database already holds this or newer data"
	} else {
		res.Detail = strings.Join(changes, "; ")
	}
	return res, insertLog(ctx, tx, ev, meta, &orgID, res)
}

// newer is the SQL condition for writing an event's values over a row: the
// stored (time, event id) is older than the event's — which orders events of
// the same portal time by id, so the outcome never depends on delivery
// order — or it is the same event and the stored values differ from it
// (values is a SQL condition), which lets a replay repair a damaged row
// while applying an event twice writes nothing.
func newer(tsCol, idCol string, tsArg, idArg int, values string) string {
	stored := fmt.Sprintf("(coalesce(%s, '-infinity'), coalesce(%s, ''))", tsCol, idCol)
	incoming := fmt.Sprintf("($%d::timestamptz, $%d::text)", tsArg, idArg)
	return fmt.Sprintf("(%s < %s OR (%s = %s AND (%s)))", stored, incoming, stored, incoming, values)
}

func upsertOrganization(ctx context.Context, tx pgx.Tx, ev *event.Event) (id string, created bool, err error) {
	err = tx.QueryRow(ctx, `
		INSERT INTO public.organizations (portal_org_id, name, portal_updated_at, portal_event_id)
		VALUES ($1, $2, CASE WHEN $2 <> '' THEN $3::timestamptz END, CASE WHEN $2 <> '' THEN $4 END)
		ON CONFLICT (portal_org_id) DO NOTHING
		RETURNING id`,
		ev.Organization.ID, ev.Organization.Name, ev.OccurredAt, ev.ID).Scan(&id)
	if err == nil {
		return id, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", false, fmt.Errorf("insert organization: %w", err)
	}
	// The name follows the newest event that carries one.
	err = tx.QueryRow(ctx, `
		WITH upd AS (
		  UPDATE public.organizations
		  SET name = $2, portal_updated_at = $3, portal_event_id = $4, updated_at = now()
		  WHERE portal_org_id = $1 AND $2 <> '' AND `+newer("portal_updated_at", "portal_event_id", 3, 4, "name IS DISTINCT FROM $2")+`
		  RETURNING id)
		SELECT id FROM upd
		UNION ALL
		SELECT id FROM public.organizations WHERE portal_org_id = $1 AND NOT EXISTS (SELECT 1 FROM upd)`,
		ev.Organization.ID, ev.Organization.Name, ev.OccurredAt, ev.ID).Scan(&id)
	if err != nil {
		return "", false, fmt.Errorf("update organization: %w", err)
	}
	return id, false, nil
}

// upsertProfile creates the member when unknown and applies the profile
// fields of created and updated events (a full snapshot) when newer than
// those held. Other event types use the fields only to create the member.
func upsertProfile(ctx context.Context, tx pgx.Tx, ev *event.Event) (id string, created bool, err error) {
	m := ev.Member
	var snapAt, snapID any
	if ev.HasProfile() {
		snapAt, snapID = ev.OccurredAt, ev.ID
	}
	err = tx.QueryRow(ctx, `
		INSERT INTO public.profiles (portal_member_id, email, first_name, last_name, phone, portal_updated_at, portal_event_id)
		VALUES ($1, nullif($2, ''), nullif($3, ''), nullif($4, ''), nullif($5, ''), $6, $7)
		ON CONFLICT (portal_member_id) DO NOTHING
		RETURNING id`,
		m.ID, m.Email, m.FirstName, m.LastName, m.Phone, snapAt, snapID).Scan(&id)
	switch {
	case err == nil:
		created = true
	case !errors.Is(err, pgx.ErrNoRows):
		return "", false, fmt.Errorf("insert profile: %w", err)
	default:
		if ev.HasProfile() {
			err = tx.QueryRow(ctx, `
				WITH upd AS (
				  UPDATE public.profiles
				  SET email = nullif($2, ''), first_name = nullif($3, ''), last_name = nullif($4, ''),
				      phone = nullif($5, ''), portal_updated_at = $6, portal_event_id = $7, updated_at = now()
				  WHERE portal_member_id = $1 AND `+newer("portal_updated_at", "portal_event_id", 6, 7,
				"(email, first_name, last_name, phone) IS DISTINCT FROM (nullif($2, ''), nullif($3, ''), nullif($4, ''), nullif($5, ''))")+`
				  RETURNING id)
				SELECT id FROM upd
				UNION ALL
				SELECT id FROM public.profiles WHERE portal_member_id = $1 AND NOT EXISTS (SELECT 1 FROM upd)`,
				m.ID, m.Email, m.FirstName, m.LastName, m.Phone, ev.OccurredAt, ev.ID).Scan(&id)
		} else {
			err = tx.QueryRow(ctx, `SELECT id FROM public.profiles WHERE portal_member_id = $1`, m.ID).Scan(&id)
		}
		if err != nil {
			return "", false, fmt.Errorf("update profile: %w", err)
		}
	}
	if _, err = tx.Exec(ctx, linkAuthUsersSQL, []string{id}); err != nil {
		return "", false, fmt.Errorf("link auth user: %w", err)
	}
	return id, created, nil
}

// linkAuthUsersSQL links each of the profiles $1 that has no auth user to
// the app's auth user with the same confirmed e-mail, unless another
// profile holds that user. Supabase Auth stores e-mails in lower case and
// keeps them unique among non-SSO users (users_email_partial_key), which
// this lookup uses. The candidates are read by primary key alone
// (MATERIALIZED, with "auth_user_id IS NULL" checked only afterwards):
// otherwise the planner scans the whole auth_user_id index for its NULLs,
// which costs more the more members have no app account.
const linkAuthUsersSQL = `
	WITH cand AS MATERIALIZED (
	  SELECT id, lower(email) AS email FROM public.profiles
	  WHERE id = ANY($1::text[]::uuid[]) AND email IS NOT NULL)
	UPDATE public.profiles p SET auth_user_id = u.id, updated_at = now()
	FROM cand JOIN auth.users u ON u.email = cand.email AND u.is_sso_user = false AND u.email_confirmed_at IS NOT NULL
	WHERE p.id = cand.id AND p.auth_user_id IS NULL
	  AND NOT EXISTS (SELECT 1 FROM public.profiles q WHERE q.auth_user_id = u.id)`

// statusIntent is the membership status an event type asks for, if any.
func statusIntent(t event.Type) string {
	switch t {
	case event.MembershipCreated, event.MembershipReactivated:
		return "active"
	case event.MembershipDeactivated:
		return "inactive"
	}
	return ""
}

func upsertMembership(ctx context.Context, tx pgx.Tx, ev *event.Event, profileID, orgID string) (string, error) {
	intent := statusIntent(ev.Type)
	var statusAt, statusID any
	status := "active" // created by an event that says nothing of status
	if intent != "" {
		status, statusAt, statusID = intent, ev.OccurredAt, ev.ID
	}
	var inserted bool
	err := tx.QueryRow(ctx, `
		INSERT INTO public.organization_memberships
		  (profile_id, organization_id, status, deactivated_at, portal_updated_at, status_portal_at, status_event_id)
		VALUES ($1, $2, $3, CASE WHEN $3 = 'inactive' THEN $4::timestamptz END, $4, $5, $6)
		ON CONFLICT (profile_id, organization_id) DO NOTHING
		RETURNING true`,
		profileID, orgID, status, ev.OccurredAt, statusAt, statusID).Scan(&inserted)
	if err == nil {
		return "membership created (" + status + ")", nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("insert membership: %w", err)
	}
	change := ""
	if intent != "" {
		tag, err := tx.Exec(ctx, `
			UPDATE public.organization_memberships
			SET status = $3,
			    deactivated_at = CASE WHEN $3 = 'inactive' THEN $4::timestamptz END,
			    status_portal_at = $4, status_event_id = $5,
			    portal_updated_at = greatest(portal_updated_at, $4), updated_at = now()
			WHERE profile_id = $1 AND organization_id = $2 AND `+newer("status_portal_at", "status_event_id", 4, 5,
			"(status, deactivated_at) IS DISTINCT FROM ($3, CASE WHEN $3 = 'inactive' THEN $4::timestamptz END)"),
			profileID, orgID, intent, ev.OccurredAt, ev.ID)
		if err != nil {
			return "", fmt.Errorf("update membership status: %w", err)
		}
		if tag.RowsAffected() > 0 {
			change = "membership " + intent
		}
	}
	if change == "" {
		// A membership no status event has spoken about is active; a
		// replay restores that if the row was damaged.
		if _, err := tx.Exec(ctx, `
			UPDATE public.organization_memberships
			SET portal_updated_at = greatest(portal_updated_at, $3),
			    status = CASE WHEN status_portal_at IS NULL THEN 'active' ELSE status END,
			    deactivated_at = CASE WHEN status_portal_at IS NULL THEN NULL ELSE deactivated_at END,
			    updated_at = now()
			WHERE profile_id = $1 AND organization_id = $2
			  AND (portal_updated_at < $3
			       OR (status_portal_at IS NULL AND (status <> 'active' OR deactivated_at IS NOT NULL)))`,
			profileID, orgID, ev.OccurredAt); err != nil {
			return "", fmt.Errorf("touch membership: %w", err)
		}
	}
	return change, nil
}

func upsertRole(ctx context.Context, tx pgx.Tx, ev *event.Event, profileID, orgID string) (bool, error) {
	tag, err := tx.Exec(ctx, `
		INSERT INTO public.role_assignments (profile_id, organization_id, role, portal_updated_at, portal_event_id)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (profile_id, organization_id) DO UPDATE
		SET role = excluded.role, portal_updated_at = excluded.portal_updated_at,
		    portal_event_id = excluded.portal_event_id, updated_at = now()
		WHERE (role_assignments.portal_updated_at, role_assignments.portal_event_id)
		    < (excluded.portal_updated_at, excluded.portal_event_id)
		   OR ((role_assignments.portal_updated_at, role_assignments.portal_event_id)
		    = (excluded.portal_updated_at, excluded.portal_event_id) AND role_assignments.role <> excluded.role)`,
		profileID, orgID, string(ev.Role), ev.OccurredAt, ev.ID)
	if err != nil {
		return false, fmt.Errorf("upsert role: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}

// syncProfileStatus derives the profile's status from its memberships
// (active while any is active) and applies the auth side effects: an
// inactive member's auth user is banned and loses every session; a
// reactivated member's ban, when this sync set it, is lifted.
func syncProfileStatus(ctx context.Context, tx pgx.Tx, profileID string) (string, error) {
	var status string
	var authUser *string
	var bannedBySync, changed bool
	err := tx.QueryRow(ctx, `
		WITH want AS (
		  SELECT CASE WHEN bool_or(status = 'active') THEN 'active' ELSE 'inactive' END AS status,
		         CASE WHEN bool_or(status = 'active') THEN NULL ELSE max(deactivated_at) END AS deactivated_at
		  FROM public.organization_memberships WHERE profile_id = $1),
		upd AS (
		  UPDATE public.profiles p SET status = want.status, deactivated_at = want.deactivated_at, updated_at = now()
		  FROM want
		  WHERE p.id = $1 AND (p.status <> want.status OR p.deactivated_at IS DISTINCT FROM want.deactivated_at)
		  RETURNING p.status, p.auth_user_id, p.auth_banned_by_sync)
		SELECT status, auth_user_id, auth_banned_by_sync, true FROM upd
		UNION ALL
		SELECT status, auth_user_id, auth_banned_by_sync, false FROM public.profiles
		WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM upd)`, profileID).Scan(&status, &authUser, &bannedBySync, &changed)
	if err != nil {
		return "", fmt.Errorf("derive profile status: %w", err)
	}
	note := ""
	if changed {
		note = "member " + status
	}
	if authUser == nil {
		return note, nil
	}
	if status == "inactive" {
		tag, err := tx.Exec(ctx, `UPDATE auth.users SET banned_until = now() + interval '`+banFor+`', updated_at = now()
			WHERE id = $1 AND (banned_until IS NULL OR banned_until < now())`, *authUser)
		if err != nil {
			return "", fmt.Errorf("ban auth user: %w", err)
		}
		if tag.RowsAffected() > 0 {
			if _, err := tx.Exec(ctx, `UPDATE public.profiles SET auth_banned_by_sync = true WHERE id = $1`, profileID); err != nil {
				return "", fmt.Errorf("mark ban: %w", err)
			}
			note = join(note, "app access revoked")
		}
		tag, err = tx.Exec(ctx, `DELETE FROM auth.sessions WHERE user_id = $1`, *authUser)
		if err != nil {
			return "", fmt.Errorf("delete sessions: %w", err)
		}
		if tag.RowsAffected() > 0 {
			note = join(note, fmt.Sprintf("%d sessions ended", tag.RowsAffected()))
		}
		return note, nil
	}
	if bannedBySync {
		if _, err := tx.Exec(ctx, `UPDATE auth.users SET banned_until = NULL, updated_at = now() WHERE id = $1`, *authUser); err != nil {
			return "", fmt.Errorf("lift ban: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE public.profiles SET auth_banned_by_sync = false WHERE id = $1`, profileID); err != nil {
			return "", fmt.Errorf("clear ban mark: %w", err)
		}
		note = join(note, "app access restored")
	}
	return note, nil
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func insertLog(ctx context.Context, tx pgx.Tx, ev *event.Event, meta Meta, orgID *string, res Result) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO public.portal_sync_log
		  (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail, member_created,
		   occurred_at, received_at, stream_seq, attempt)
		VALUES ($1, $2, $3, nullif($4, ''), $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (event_id) WHERE status IN ('success', 'skipped') DO NOTHING`,
		ev.ID, string(ev.Type), ev.Member.ID, ev.Organization.ID, orgID, res.Status, res.Detail, res.MemberCreated,
		ev.OccurredAt, nullTime(meta.ReceivedAt), int64(meta.StreamSeq), max(meta.Attempt, 1))
	if err != nil {
		return fmt.Errorf("insert log: %w", err)
	}
	return nil
}
