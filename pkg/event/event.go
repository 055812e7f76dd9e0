// Package event defines the portal's membership event contract: the JSON
// shape the Min Side portal posts, its validation rules, and the NATS
// subject key that keeps each member's events together.
package event

import (
	"time"
)

// Type names what happened to a membership in the portal.
type Type string

// The event types the portal sends. Anything else is an unknown type: the
// ingress accepts it and the syncer logs it as skipped, so that the portal can
// add types without breaking delivery.
const (
	MembershipCreated     Type = "membership-created"
	MembershipUpdated     Type = "membership-updated"
	RoleUpdated           Type = "role-updated"
	MembershipDeactivated Type = "membership-deactivated"
	MembershipReactivated Type = "membership-reactivated"
)

// Types lists the known event types in a stable order.
var Types = []Type{MembershipCreated, MembershipUpdated, RoleUpdated, MembershipDeactivated, MembershipReactivated}

// Known reports whether t is one of the types this version understands.
func (t Type) Known() bool {
	switch t {
	case MembershipCreated, MembershipUpdated, RoleUpdated, MembershipDeactivated, MembershipReactivated:
		return true
	}
	return false
}

// RequiresRole reports whether events of type t must carry a role.
func (t Type) RequiresRole() bool {
	return t == MembershipCreated || t == RoleUpdated
}

// Role is a member's role inside one organization.
type Role string

// The roles of the Likeperson app.
const (
	RolePeerMentor  Role = "peer_mentor"
	RoleCoordinator Role = "coordinator"
	RoleOrgAdmin    Role = "org_admin"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	return r == RolePeerMentor || r == RoleCoordinator || r == RoleOrgAdmin
}

// Organization identifies the organization a membership belongs to.
type Organization struct {
	// ID is the portal's organization ID.
	ID string `json:"id"`
	// Name is the organization's display name; optional.
	Name string `json:"name,omitempty"`
}

// Member carries the member's portal ID and the profile fields the portal
// holds. The profile fields are personal data: never log them.
type Member struct {
	// ID is the portal's member ID; it keys the member everywhere.
	ID        string `json:"id"`
	Email     string `json:"email,omitempty"`
	FirstName string `json:"first_name,omitempty"`
	LastName  string `json:"last_name,omitempty"`
	Phone     string `json:"phone,omitempty"`
}

// Event is one membership change as the portal posts it.
type Event struct {
	// ID is unique per event and equals the webhook-id header.
	ID string `json:"id"`
	// Type names the change.
	Type Type `json:"type"`
	// OccurredAt is the portal's modification time; it orders the events of
	// one member.
	OccurredAt   time.Time    `json:"occurred_at"`
	Organization Organization `json:"organization"`
	Member       Member       `json:"member"`
	// Role is required for membership-created and role-updated, optional for
	// membership-updated, and ignored otherwise.
	Role Role `json:"role,omitempty"`
}

// HasProfile reports whether the event carries a full snapshot of the
// member's profile fields (created and updated events do); other types carry
// the member's fields only to create a member the app does not know yet.
func (e *Event) HasProfile() bool {
	return e.Type == MembershipCreated || e.Type == MembershipUpdated
}
