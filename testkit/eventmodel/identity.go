package eventmodel

import (
	"strings"

	"github.com/likeperson/portalsync/pkg/event"
)

// Account is an app account (Supabase's auth.users) that exists before the
// events are applied, as the model sees it.
type Account struct {
	ID string
	// Email is in lower case, as Supabase Auth stores it.
	Email string
	// Confirmed: the e-mail is confirmed (email_confirmed_at set).
	Confirmed bool
	// SSO accounts are never linked.
	SSO bool
	// AdminBanned: banned by an administrator; the sync never lifts it.
	AdminBanned bool
}

// Identity is the expected account side of one member.
type Identity struct {
	// Account is the linked account's ID; "" when none is linked.
	Account string
	// BannedBySync is the sync's ban flag.
	BannedBySync bool
	// Banned: the account is banned (by the sync or an administrator).
	Banned bool
	// SessionsEnded: the account's sessions were deleted. They are when the
	// member has no active membership; a member active again whose
	// membership was ended on the way may or may not have lost them (a
	// transaction that saw the member inactive deletes them): then
	// SessionsEither is true.
	SessionsEnded  bool
	SessionsEither bool
	// Undecided is true when several members have the e-mail: then at most
	// one of them is linked (the one that had it alone when a decision was
	// taken), which depends on the order the events were applied in.
	Undecided bool
}

// ExpectIdentity returns every member's expected identity. The members'
// portal e-mails are those their events carry (the model assumes a member's
// e-mail does not change; a changed one keeps the link it has, which
// depends on when the change is seen). A member is linked to the account
// whose confirmed, non-SSO e-mail equals theirs in lower case,
// when no other member has that e-mail. A linked account is banned by the
// sync while the member is inactive (unless an administrator's ban holds),
// and loses its sessions.
func ExpectIdentity(events []event.Event, accounts []Account) map[string]Identity {
	members := Expect(events)
	email := map[string]string{}
	deactivated := map[string]bool{}
	for _, e := range events {
		if !e.Type.Known() {
			continue
		}
		if e.Member.Email != "" {
			email[e.Member.ID] = strings.ToLower(e.Member.Email)
		}
		if e.Type == event.MembershipDeactivated {
			deactivated[e.Member.ID] = true
		}
	}
	holders := map[string]int{}
	for m := range members {
		if e, ok := email[m]; ok {
			holders[e]++
		}
	}
	erasedEmails := ErasedEmails(events)
	out := map[string]Identity{}
	for m, st := range members {
		var id Identity
		e := email[m]
		for _, a := range accounts {
			if !a.Confirmed || a.SSO || e == "" || a.Email != e {
				continue
			}
			// An erased member held the e-mail too: whether the other
			// could link depends on whether the erasure came first.
			if holders[e] > 1 || erasedEmails[e] {
				id.Undecided = true
				break
			}
			id.Account = a.ID
			id.Banned = a.AdminBanned || st.Status == "inactive"
			id.BannedBySync = !a.AdminBanned && st.Status == "inactive"
			id.SessionsEnded = st.Status == "inactive"
			id.SessionsEither = st.Status == "active" && deactivated[m]
			break
		}
		out[m] = id
	}
	return out
}

// ErasedEmails are the lower-cased e-mails that the events of erased
// members (those with a member-deleted event) carried. An account with
// such an e-mail is banned with its sessions ended when it was linked to
// the member before the erasure, and left alone when the erasure came
// first (the member's other events are then skipped): which one depends
// on the order the events were applied in.
func ErasedEmails(events []event.Event) map[string]bool {
	erased := map[string]bool{}
	for _, e := range events {
		if e.Type == event.MemberDeleted {
			erased[e.Member.ID] = true
		}
	}
	out := map[string]bool{}
	for _, e := range events {
		if erased[e.Member.ID] && e.Member.Email != "" {
			out[strings.ToLower(e.Member.Email)] = true
		}
	}
	return out
}
