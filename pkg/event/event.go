// Package event defines the portal's membership event contract: the JSON
// shape the Min Side portal posts, its validation rules, and the NATS
// subject key that keeps each member's events together.
package event

import (
	"encoding/json"
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
	// MemberDeleted says the portal deleted the member's contact: the app
	// erases the member (GDPR art. 17). It names no organization.
	MemberDeleted Type = "member-deleted"
)

// Types lists the membership event types in a stable order: each names an
// organization and upserts the member.
var Types = []Type{MembershipCreated, MembershipUpdated, RoleUpdated, MembershipDeactivated, MembershipReactivated}

// AllTypes lists every known event type: the membership types and
// MemberDeleted.
var AllTypes = append(append([]Type(nil), Types...), MemberDeleted)

// Known reports whether t is one of the types this version understands.
func (t Type) Known() bool {
	switch t {
	case MembershipCreated, MembershipUpdated, RoleUpdated, MembershipDeactivated, MembershipReactivated, MemberDeleted:
		return true
	}
	return false
}

// NeedsOrganization reports whether events of type t must name an
// organization: every known type but MemberDeleted.
func (t Type) NeedsOrganization() bool { return t.Known() && t != MemberDeleted }

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
	// ID is the portal's organization ID, canonical (see CanonicalID).
	ID string `json:"id"`
	// Name is the organization's display name; optional. Like a member's
	// fields it is a JSON Merge Patch: absent (and not NameCleared) leaves
	// the stored name as it is.
	Name string `json:"name,omitempty"`
	// NameCleared is true when the event sets the name to null (or "").
	NameCleared bool `json:"-"`
}

// HasName reports whether the event says anything about the name.
func (o Organization) HasName() bool { return o.Name != "" || o.NameCleared }

// Field is one profile field of a member.
type Field uint8

// The profile fields, as bits of a Fields set.
const (
	FieldEmail Field = 1 << iota
	FieldFirstName
	FieldLastName
	FieldPhone
)

// ProfileFields lists the profile fields in a stable order.
var ProfileFields = []Field{FieldEmail, FieldFirstName, FieldLastName, FieldPhone}

// String is the field's JSON name (not personal data).
func (f Field) String() string {
	switch f {
	case FieldEmail:
		return "email"
	case FieldFirstName:
		return "first_name"
	case FieldLastName:
		return "last_name"
	case FieldPhone:
		return "phone"
	}
	return "unknown"
}

// Fields is a set of profile fields.
type Fields uint8

// Has reports whether f is in the set.
func (s Fields) Has(f Field) bool { return s&Fields(f) != 0 }

// With returns the set with f added.
func (s Fields) With(f Field) Fields { return s | Fields(f) }

// Member carries the member's portal ID and the profile fields the portal
// holds. The profile fields are personal data: never log them.
//
// The fields are a JSON Merge Patch (RFC 7386): a field that is absent
// leaves the stored value unchanged, an explicit null (or "") clears it. A
// field is present when it holds a value or is in Cleared.
type Member struct {
	// ID is the portal's member ID, canonical (see CanonicalID); it keys
	// the member everywhere.
	ID        string `json:"id"`
	Email     string `json:"email,omitempty"`
	FirstName string `json:"first_name,omitempty"`
	LastName  string `json:"last_name,omitempty"`
	Phone     string `json:"phone,omitempty"`
	// Cleared holds the fields the event sets to null.
	Cleared Fields `json:"-"`
}

// Value returns the member's value of f ("" when absent or cleared).
func (m *Member) Value(f Field) string {
	switch f {
	case FieldEmail:
		return m.Email
	case FieldFirstName:
		return m.FirstName
	case FieldLastName:
		return m.LastName
	case FieldPhone:
		return m.Phone
	}
	return ""
}

// Has reports whether the event says anything about f: a value, or null.
func (m *Member) Has(f Field) bool { return m.Value(f) != "" || m.Cleared.Has(f) }

// Present returns the set of fields the event carries.
func (m *Member) Present() Fields {
	var s Fields
	for _, f := range ProfileFields {
		if m.Has(f) {
			s = s.With(f)
		}
	}
	return s
}

// MarshalJSON writes the member as the portal sends it: present fields
// with their values, cleared ones as null, absent ones left out.
func (m Member) MarshalJSON() ([]byte, error) {
	out := map[string]any{"id": m.ID}
	for _, f := range ProfileFields {
		switch {
		case m.Value(f) != "":
			out[f.String()] = m.Value(f)
		case m.Cleared.Has(f):
			out[f.String()] = nil
		}
	}
	return json.Marshal(out)
}

// MarshalJSON writes the organization, a cleared name as null.
func (o Organization) MarshalJSON() ([]byte, error) {
	out := map[string]any{"id": o.ID}
	switch {
	case o.Name != "":
		out["name"] = o.Name
	case o.NameCleared:
		out["name"] = nil
	}
	return json.Marshal(out)
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

// HasProfile reports whether the event's member fields change the profile
// (created and updated events, as a merge patch: only the fields present);
// other types carry the member's fields only to create a member the app
// does not know yet.
func (e *Event) HasProfile() bool {
	return e.Type == MembershipCreated || e.Type == MembershipUpdated
}
