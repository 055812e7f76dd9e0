package store

import _ "embed" // the statements

// The store's statements, one per file in queries/, each opening with a
// comment naming the table it touches and what its arguments are. None is
// built at run time. The "newer than stored" guard of the upserts is one
// SQL function, portalsync.newer (migration 00026), which PostgreSQL
// inlines (TestNewerGuardInlined).
var (
	//go:embed queries/sync_log_look_up.sql
	lookUpSQL string
	//go:embed queries/organizations_upsert.sql
	upsertOrganizationsSQL string
	//go:embed queries/organizations_ids.sql
	organizationIDsSQL string
	//go:embed queries/profiles_upsert.sql
	upsertProfilesSQL string
	//go:embed queries/profiles_ids.sql
	profileIDsSQL string
	//go:embed queries/account_links_link_members.sql
	linkMembersSQL string
	//go:embed queries/organization_memberships_upsert.sql
	upsertMembershipsSQL string
	//go:embed queries/role_assignments_upsert.sql
	upsertRolesSQL string
	//go:embed queries/profiles_apply_access.sql
	applyAccessSQL string
	//go:embed queries/profiles_stamps.sql
	profileStampsSQL string
	//go:embed queries/organization_memberships_stamps.sql
	membershipStampsSQL string
	//go:embed queries/organization_memberships_end.sql
	endMembershipsSQL string
	//go:embed queries/organization_memberships_orgs_of_members.sql
	orgsOfMembersSQL string
	//go:embed queries/profiles_erase_member.sql
	eraseMemberSQL string
	//go:embed queries/sync_log_insert.sql
	insertLogSQL string
	//go:embed queries/sync_log_insert_failed.sql
	insertFailedSQL string
	//go:embed queries/sync_log_purge.sql
	purgeLogSQL string
	//go:embed queries/ping.sql
	pingSQL string
	//go:embed queries/profiles_reset_future.sql
	resetFutureProfilesSQL string
	//go:embed queries/organization_memberships_reset_future.sql
	resetFutureMembershipsSQL string
	//go:embed queries/role_assignments_reset_future.sql
	resetFutureRolesSQL string
	//go:embed queries/organizations_reset_future.sql
	resetFutureOrganizationsSQL string
	//go:embed queries/sync_health_upsert.sql
	syncHealthUpsertSQL string
	//go:embed queries/sync_health_delete.sql
	syncHealthDeleteSQL string
	//go:embed queries/sync_health_purge.sql
	syncHealthPurgeSQL string
	//go:embed queries/sync_log_last_applied.sql
	lastAppliedSQL string
	//go:embed queries/sync_log_failed_last_24h.sql
	failedLast24hSQL string
	//go:embed queries/sync_log_org_last_success.sql
	orgLastSuccessSQL string
)
