package store

import (
	"fmt"
	"strings"
)

// The statements of a batch, in the order it runs them.

// lookUpSQL reads the events ($1) the log holds as done and the members
// erased before (tombstone hashes $2).
const lookUpSQL = `
	SELECT false, event_id, status FROM public.portal_sync_log
	WHERE event_id = ANY($1) AND status IN ('success', 'skipped')
	UNION ALL
	SELECT true, member_hash, '' FROM portalsync.erased_members WHERE member_hash = ANY($2)`

var upsertOrganizationsSQL = `
	INSERT INTO public.organizations AS o (portal_org_id, name, portal_updated_at, portal_event_id)
	SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS t(k, n, a, e) ORDER BY t.k COLLATE "C"
	ON CONFLICT (portal_org_id) DO UPDATE
	SET name = excluded.name, portal_updated_at = excluded.portal_updated_at,
	    portal_event_id = excluded.portal_event_id, updated_at = now()
	WHERE excluded.portal_updated_at IS NOT NULL AND ` + newerExcluded("o", "o.name IS DISTINCT FROM excluded.name")

// organizations reads the ids of the organizations upserted before the
// transaction (ApplyBatch). FOR KEY SHARE, as the log's foreign key took it
// before 00022: an organization deleted meanwhile waits for this
// transaction, so that its trigger clears the ids this batch logs.
// organizationIDsSQL reads the organizations' ids FOR KEY SHARE.
const organizationIDsSQL = `SELECT portal_org_id, id::text FROM public.organizations WHERE portal_org_id = ANY($1) FOR KEY SHARE`

// profileIDsSQL reads the profiles' ids.
const profileIDsSQL = `SELECT portal_member_id, id::text FROM public.profiles WHERE portal_member_id = ANY($1)`

// newerExcluded is the ON CONFLICT condition for writing an event's values
// over a row: the stored (portal time, event id) of alias is older than
// excluded's — which orders events of the same portal time by id, so the
// outcome never depends on delivery order — or it is the same event and
// the stored values differ (valuesDiffer, a full condition), which lets a
// replay repair a damaged row while applying an event twice writes
// nothing.
func newerExcluded(alias, valuesDiffer string) string {
	stored := fmt.Sprintf("(coalesce(%s.portal_updated_at, '-infinity'), coalesce(%s.portal_event_id, ''))", alias, alias)
	incoming := "(excluded.portal_updated_at, excluded.portal_event_id)"
	return fmt.Sprintf("(%s < %s OR (%s = %s AND %s))", stored, incoming, stored, incoming, valuesDiffer)
}

// profileColumns are the profile field columns, in event.ProfileFields
// order; each has <name>_portal_at and <name>_event_id, the stamp of the
// value it holds.
var profileColumns = []string{"email", "first_name", "last_name", "phone"}

// upsertProfilesSQL writes each member's merge patch: a field is written
// when the batch carries it and its event is newer than the field's stamp
// (or is the same event and the value differs, which lets a replay repair
// it); a field the batch does not carry keeps its value. A new member is
// inserted with every field, carried or not (then unstamped).
var upsertProfilesSQL = func() string {
	var cols, sel, set, anyNewer []string
	args := []string{"$1::text[]"}
	for i, c := range profileColumns {
		v, at, eid := 2+3*i, 3+3*i, 4+3*i
		args = append(args, fmt.Sprintf("$%d::text[]", v), fmt.Sprintf("$%d::timestamptz[]", at), fmt.Sprintf("$%d::text[]", eid))
		cols = append(cols, c, c+"_portal_at", c+"_event_id")
		sel = append(sel, fmt.Sprintf("nullif(t.v%d, '')", i), fmt.Sprintf("t.a%d", i), fmt.Sprintf("t.e%d", i))
		stored := fmt.Sprintf("(coalesce(p.%s_portal_at, '-infinity'), coalesce(p.%s_event_id, ''))", c, c)
		incoming := fmt.Sprintf("(excluded.%s_portal_at, excluded.%s_event_id)", c, c)
		newer := fmt.Sprintf("(excluded.%s_portal_at IS NOT NULL AND (%s < %s OR (%s = %s AND p.%s IS DISTINCT FROM excluded.%s)))",
			c, stored, incoming, stored, incoming, c, c)
		anyNewer = append(anyNewer, newer)
		for _, col := range []string{c, c + "_portal_at", c + "_event_id"} {
			set = append(set, fmt.Sprintf("%s = CASE WHEN %s THEN excluded.%s ELSE p.%s END", col, newer, col, col))
		}
	}
	names := []string{"k"}
	for i := range profileColumns {
		names = append(names, fmt.Sprintf("v%d", i), fmt.Sprintf("a%d", i), fmt.Sprintf("e%d", i))
	}
	newestStored := "(coalesce(p.portal_updated_at, '-infinity'), coalesce(p.portal_event_id, ''))"
	newestIncoming := "(excluded.portal_updated_at, excluded.portal_event_id)"
	return fmt.Sprintf(`
		INSERT INTO public.profiles AS p (portal_member_id, %s, portal_updated_at, portal_event_id)
		SELECT t.k, %s, t.ts, t.eid
		FROM unnest(%s, $14::timestamptz[], $15::text[]) AS t(%s, ts, eid)
		ORDER BY t.k COLLATE "C"
		ON CONFLICT (portal_member_id) DO UPDATE
		SET %s,
		    portal_updated_at = CASE WHEN excluded.portal_updated_at IS NOT NULL AND %s < %s THEN excluded.portal_updated_at ELSE p.portal_updated_at END,
		    portal_event_id = CASE WHEN excluded.portal_updated_at IS NOT NULL AND %s < %s THEN excluded.portal_event_id ELSE p.portal_event_id END,
		    updated_at = now()
		WHERE %s
		RETURNING portal_member_id, id::text, xmax = 0, email_portal_at, email_event_id, first_name_portal_at, first_name_event_id,
		          last_name_portal_at, last_name_event_id, phone_portal_at, phone_event_id`,
		strings.Join(cols, ", "), strings.Join(sel, ", "), strings.Join(args, ", "), strings.Join(names, ", "),
		strings.Join(set, ",\n\t\t    "), newestStored, newestIncoming, newestStored, newestIncoming,
		strings.Join(anyNewer, "\n\t\t   OR "))
}()

// newerStatus is the memberships' newer-than guard for the status.
const newerStatus = `(excluded.status_portal_at IS NOT NULL AND (
		(coalesce(m.status_portal_at, '-infinity'), coalesce(m.status_event_id, '')) < (excluded.status_portal_at, excluded.status_event_id)
		OR ((coalesce(m.status_portal_at, '-infinity'), coalesce(m.status_event_id, '')) = (excluded.status_portal_at, excluded.status_event_id)
		    AND (m.status, m.deactivated_at) IS DISTINCT FROM (excluded.status, excluded.deactivated_at))))`

// upsertMembershipsSQL writes the memberships' status.
const upsertMembershipsSQL = `
		INSERT INTO public.organization_memberships AS m
		  (profile_id, organization_id, status, deactivated_at, status_portal_at, status_event_id, portal_updated_at)
		SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::timestamptz[])
		ORDER BY 1, 2
		ON CONFLICT (profile_id, organization_id) DO UPDATE
		SET status = CASE WHEN ` + newerStatus + ` THEN excluded.status WHEN m.status_portal_at IS NULL THEN 'active' ELSE m.status END,
		    deactivated_at = CASE WHEN ` + newerStatus + ` THEN excluded.deactivated_at WHEN m.status_portal_at IS NULL THEN NULL ELSE m.deactivated_at END,
		    status_portal_at = CASE WHEN ` + newerStatus + ` THEN excluded.status_portal_at ELSE m.status_portal_at END,
		    status_event_id = CASE WHEN ` + newerStatus + ` THEN excluded.status_event_id ELSE m.status_event_id END,
		    portal_updated_at = greatest(m.portal_updated_at, excluded.portal_updated_at),
		    updated_at = now()
		WHERE ` + newerStatus + ` OR m.portal_updated_at < excluded.portal_updated_at
		   OR (m.status_portal_at IS NULL AND (m.status <> 'active' OR m.deactivated_at IS NOT NULL))
		RETURNING profile_id::text, organization_id::text, xmax = 0, status_portal_at, status_event_id`

// upsertRolesSQL writes the roles.
var upsertRolesSQL = `
		INSERT INTO public.role_assignments AS r (profile_id, organization_id, role, portal_updated_at, portal_event_id)
		SELECT * FROM unnest($1::text[]::uuid[], $2::text[]::uuid[], $3::text[], $4::timestamptz[], $5::text[]) ORDER BY 1, 2
		ON CONFLICT (profile_id, organization_id) DO UPDATE
		SET role = excluded.role, portal_updated_at = excluded.portal_updated_at,
		    portal_event_id = excluded.portal_event_id, updated_at = now()
		WHERE ` + newerExcluded("r", "r.role <> excluded.role") + `
		RETURNING profile_id::text, organization_id::text, portal_updated_at, portal_event_id`

// profileStampsSQL reads the profiles' field stamps.
const profileStampsSQL = `SELECT portal_member_id, email_portal_at, email_event_id, first_name_portal_at, first_name_event_id,
			       last_name_portal_at, last_name_event_id, phone_portal_at, phone_event_id
			FROM public.profiles WHERE portal_member_id = ANY($1)`

// membershipStampsSQL reads the memberships' status and role stamps.
const membershipStampsSQL = `SELECT m.profile_id::text, m.organization_id::text, m.status_portal_at, m.status_event_id,
			       r.portal_updated_at, r.portal_event_id
			FROM unnest($1::text[]::uuid[], $2::text[]::uuid[]) AS k(profile_id, organization_id)
			JOIN public.organization_memberships m ON m.profile_id = k.profile_id AND m.organization_id = k.organization_id
			LEFT JOIN public.role_assignments r ON r.profile_id = m.profile_id AND r.organization_id = m.organization_id`

// endMembershipsSQL ends the memberships of the profiles to erase.
const endMembershipsSQL = `UPDATE public.organization_memberships SET status = 'inactive', updated_at = now()
			WHERE profile_id = ANY($1::text[]::uuid[]) AND status <> 'inactive'`

// eraseMemberSQL erases one member.
const eraseMemberSQL = `SELECT * FROM portalsync.erase_member($1, $2, $3)`

// insertLogSQL writes the log rows.
const insertLogSQL = `
		INSERT INTO public.portal_sync_log
		  (event_id, event_type, portal_member_id, portal_org_id, organization_id, status, detail, member_created,
		   occurred_at, received_at, stream_seq, attempt)
		SELECT t.eid, t.typ, t.mem, t.porg,
		       coalesce(t.oid, (SELECT o.id FROM public.organizations o WHERE o.portal_org_id = t.porg)),
		       t.st, t.det, t.cr, t.occ, t.rec, t.seq, t.att
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]::uuid[], $6::text[], $7::text[], $8::bool[],
		            $9::timestamptz[], $10::timestamptz[], $11::bigint[], $12::int[])
		  AS t(eid, typ, mem, porg, oid, st, det, cr, occ, rec, seq, att)`
