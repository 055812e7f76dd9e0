package store

import (
	"github.com/likeperson/portalsync/pkg/event"
)

// banFor is how long a deactivated member's auth user is banned: for good,
// in the form GoTrue itself uses for an indefinite ban.
const banFor = "876000 hours"

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
