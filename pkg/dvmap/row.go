package dvmap

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/likeperson/portalsync/pkg/event"
)

// The rows of the mapped tables reach the project two ways: in a
// webhook's RemoteExecutionContext (the ingress's Dataverse intake) and
// from the Web API (the syncer's reconciler). Each turns its row into a
// Row; what a row means — its profile fields, its lookups, its role and
// state — is decided here, once, so that every check holds for both.

// Kind says what a Value holds.
type Kind uint8

// The kinds of column values.
const (
	// KindAbsent: the row does not carry the column (a webhook's Update
	// carries only what changed).
	KindAbsent Kind = iota
	// KindNull: the column is empty.
	KindNull
	// KindString: text (Str).
	KindString
	// KindOption: an option set value (Num): in a context an
	// OptionSetValue, from the Web API a number.
	KindOption
	// KindReference: a lookup: the id of a row (Str) of the table Table,
	// with that row's primary name (Name) where the source carries it. A
	// reference whose table the source does not say has Table "".
	KindReference
	// KindOther: any other type (a number where text belongs, money, …).
	KindOther
)

// Value is one column of a row.
type Value struct {
	Kind  Kind
	Str   string
	Num   float64
	Table string
	Name  string
}

// Row is one row of a mapped table.
type Row struct {
	// Table is the row's logical name, ID its id.
	Table, ID string
	// Columns are the row's columns by logical name (lower case): for a
	// webhook's Update only those that changed, for a row read from the
	// Web API every selected one (KindNull where empty).
	Columns map[string]Value
	// Images are further versions of the row that lookups are also looked
	// for in, in order, when Columns lacks them: a webhook's post-images,
	// then its pre-images.
	Images []map[string]Value
}

func (r Row) column(name string) Value { return r.Columns[name] }

// RowError says why a row cannot become an event as it is: a retry would
// not help. Reason is a short slug (no-organization, unknown-role, …), the
// same whichever way the row came; Detail and Fields name tables, columns
// and row ids, never a column's value.
type RowError struct {
	Reason string
	Detail string
	Fields []event.FieldError
}

func (e *RowError) Error() string { return e.Reason + ": " + e.Detail }

func rowError(reason, format string, args ...any) *RowError {
	return &RowError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// profileColumn is a profile field and the member table's column for it.
type profileColumn struct {
	field  event.Field
	column string
}

// profileColumns are the member table's profile columns.
func (m Mapping) profileColumns() []profileColumn {
	mt := m.Member
	return []profileColumn{{event.FieldEmail, mt.Email}, {event.FieldFirstName, mt.FirstName},
		{event.FieldLastName, mt.LastName}, {event.FieldPhone, mt.Phone}}
}

// MemberOf is the member a member row describes: its id, and each profile
// field the row carries — a column absent from the row leaves the field
// unchanged, an empty or blank one clears it (the contract's JSON Merge
// Patch). A column that is not text is refused (bad-attribute): a value
// is never guessed.
func (m Mapping) MemberOf(r Row) (event.Member, error) {
	member := event.Member{ID: event.CanonicalID(r.ID)}
	for _, f := range m.profileColumns() {
		v := r.column(f.column)
		switch v.Kind {
		case KindAbsent:
			continue
		case KindNull:
			member.Cleared = member.Cleared.With(f.field)
		case KindString:
			s := strings.TrimSpace(v.Str)
			if s == "" {
				member.Cleared = member.Cleared.With(f.field)
				continue
			}
			switch f.field {
			case event.FieldEmail:
				member.Email = s
			case event.FieldFirstName:
				member.FirstName = s
			case event.FieldLastName:
				member.LastName = s
			case event.FieldPhone:
				member.Phone = s
			}
		default:
			return event.Member{}, &RowError{Reason: "bad-attribute", Detail: fmt.Sprintf("%s.%s is not text", r.Table, f.column),
				Fields: []event.FieldError{{Field: "member." + f.field.String(), Reason: "not text"}}}
		}
	}
	return member, nil
}

// MemberOrganization is the organization a member row names in its
// organization lookup (member.organization). Only a reference to the
// organization table counts: a contact's parentcustomerid is a Customer
// lookup, which may name another contact, and its id alone does not say
// which table it is in.
func (m Mapping) MemberOrganization(r Row) (event.Organization, error) {
	ref, ok := lookup(r, m.Member.Organization, m.Organization.Table)
	if !ok {
		return event.Organization{}, rowError("no-organization", "%s %s names no %s in %s",
			r.Table, event.CanonicalID(r.ID), m.Organization.Table, m.Member.Organization)
	}
	return m.organization(ref), nil
}

// MembershipParties are the member and organization a membership row
// names in its lookups, each only as a reference to the mapped table.
func (m Mapping) MembershipParties(r Row) (member string, org event.Organization, err error) {
	mt := m.Membership
	memberRef, ok := lookup(r, mt.Member, m.Member.Table)
	if !ok {
		return "", event.Organization{}, rowError("no-member", "%s %s names no %s in %s",
			r.Table, event.CanonicalID(r.ID), m.Member.Table, mt.Member)
	}
	orgRef, ok := lookup(r, mt.Organization, m.Organization.Table)
	if !ok {
		return "", event.Organization{}, rowError("no-organization", "%s %s names no %s in %s",
			r.Table, event.CanonicalID(r.ID), m.Organization.Table, mt.Organization)
	}
	return memberRef.Str, m.organization(orgRef), nil
}

// organization is the contract's organization of a reference to the
// organization table, with the name where the source carries it.
func (m Mapping) organization(ref Value) event.Organization {
	return event.Organization{ID: ref.Str, Name: strings.TrimSpace(ref.Name)}
}

// emptyGUID is Guid.Empty, which Dataverse may write for a lookup that
// points at no row.
const emptyGUID = "00000000-0000-0000-0000-000000000000"

// lookup finds the lookup column in the row, then in its images. A
// reference counts only when it names table and a row: its id a valid id
// (braces and case are canonicalized) and not Guid.Empty. A reference to
// another table, or to a table the source does not name, is passed over.
func lookup(r Row, column, table string) (Value, bool) {
	for _, cols := range append([]map[string]Value{r.Columns}, r.Images...) {
		v, ok := cols[column]
		if !ok || v.Kind != KindReference {
			continue
		}
		id := event.CanonicalID(v.Str)
		if !event.ValidID(id) || id == emptyGUID || v.Table != table {
			continue
		}
		v.Str = id
		return v, true
	}
	return Value{}, false
}

// State is what a membership row says about its state.
type State uint8

// The states of a membership row.
const (
	// StateNone: the row does not carry the state column, or it is empty.
	StateNone State = iota
	StateActive
	StateInactive
)

// MembershipState reads the membership's state column (membership.state)
// by the mapping's active and inactive values. A value that is neither is
// refused (unknown-state), as is one that is not an option set value.
func (m Mapping) MembershipState(r Row) (State, error) {
	mt := m.Membership
	v := r.column(mt.State)
	if v.Kind == KindAbsent || v.Kind == KindNull {
		return StateNone, nil
	}
	n, err := optionValue(r, mt.State, v)
	if err != nil {
		return StateNone, err
	}
	switch {
	case slices.Contains(mt.ActiveStates, n):
		return StateActive, nil
	case slices.Contains(mt.InactiveStates, n):
		return StateInactive, nil
	}
	return StateNone, rowError("unknown-state", "%s.%s value %d is neither active nor inactive", r.Table, mt.State, n)
}

// MembershipRole reads the membership's role column (membership.role) by
// the mapping's roles: "" when the row does not carry it or it is empty.
// A value the mapping lacks is refused (unknown-role), never dropped: the
// member would lose the role the portal gives them.
func (m Mapping) MembershipRole(r Row) (event.Role, error) {
	mt := m.Membership
	v := r.column(mt.Role)
	if v.Kind == KindAbsent || v.Kind == KindNull {
		return "", nil
	}
	n, err := optionValue(r, mt.Role, v)
	if err != nil {
		return "", err
	}
	key := strconv.Itoa(n)
	role, ok := mt.Roles[key]
	if !ok {
		return "", &RowError{Reason: "unknown-role", Detail: fmt.Sprintf("%s.%s value %s maps to no role", r.Table, mt.Role, key),
			Fields: []event.FieldError{{Field: "role", Reason: "option value maps to no role"}}}
	}
	return role, nil
}

// optionValue reads an option set column: a whole number in Int32's
// range, as Dataverse's option values are. Any other shape (text, a
// fraction, a number where a context sends an OptionSetValue) is refused.
func optionValue(r Row, column string, v Value) (int, error) {
	if v.Kind != KindOption || v.Num != math.Trunc(v.Num) || v.Num < math.MinInt32 || v.Num > math.MaxInt32 {
		return 0, &RowError{Reason: "bad-attribute", Detail: fmt.Sprintf("%s.%s is not an option set value", r.Table, column),
			Fields: []event.FieldError{{Field: column, Reason: "not an option set value"}}}
	}
	return int(v.Num), nil
}

// Encode writes the event as the contract's JSON and decodes it back, so
// that what is published is exactly what a signed portal webhook would
// carry and every contract rule (field lengths, e-mail, phone) applies. A
// member-deleted event names no organization. An event the contract
// refuses is a RowError (invalid-event) naming the fields, not the values.
func Encode(ev *event.Event) ([]byte, *event.Event, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, nil, fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	if ev.Type == event.MemberDeleted {
		var w map[string]any
		if err := json.Unmarshal(body, &w); err != nil {
			return nil, nil, fmt.Errorf("encode event %s: %w", ev.ID, err)
		}
		delete(w, "organization")
		if body, err = json.Marshal(w); err != nil {
			return nil, nil, fmt.Errorf("encode event %s: %w", ev.ID, err)
		}
	}
	dec, err := event.Decode(body)
	if err != nil {
		var verr event.ValidationError
		if errors.As(err, &verr) {
			return nil, nil, &RowError{Reason: "invalid-event", Detail: verr.Error(), Fields: verr}
		}
		return nil, nil, fmt.Errorf("decode built event %s: %w", ev.ID, err)
	}
	return body, dec, nil
}
