// Package dvmap is the declarative mapping of Dataverse (Dynamics 365)
// tables and columns to the project's members, organizations and
// memberships, shared by the ingress's Dataverse intake and the syncer's
// reconciler. The file format is documented in docs/DATAVERSE.md.
package dvmap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/likeperson/portalsync/pkg/event"
)

// Mapping says which Dataverse tables and columns hold the members, the
// organizations and the memberships. It is read from a JSON file
// (DATAVERSE_MAPPING_FILE, documented in docs/DATAVERSE.md); fields the
// file leaves out take DefaultMapping's values. Logical names are compared
// in lower case.
type Mapping struct {
	Member       MemberTable       `json:"member"`
	Organization OrganizationTable `json:"organization"`
	Membership   MembershipTable   `json:"membership"`
}

// MemberTable maps the member's table. Default "contact".
type MemberTable struct {
	Table string `json:"table"`
	// EntitySet is the table's Web API collection. Default "contacts".
	EntitySet string `json:"entity_set"`
	ID        string `json:"id"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	Email     string `json:"email"`
	Phone     string `json:"phone"`
	// Organization is the member's lookup to their organization; a profile
	// change (Create, Update) is delivered as membership-updated for it, so
	// the Update step needs it in a post-image. Default "parentcustomerid".
	Organization string `json:"organization"`
	// ModifiedOn is the column whose time becomes occurred_at. Default
	// "modifiedon".
	ModifiedOn string `json:"modified_on"`
	// Messages maps a Dataverse message to an event type. Default Create
	// and Update → membership-updated, Delete → member-deleted.
	Messages map[string]event.Type `json:"messages"`
}

// OrganizationTable maps the organization's table. Default "account".
// The contract carries an organization only within a membership, so the
// intake takes the organization's name from the membership's lookup
// (EntityReference.Name) and acknowledges the organization table's own
// messages without an event.
type OrganizationTable struct {
	Table     string `json:"table"`
	EntitySet string `json:"entity_set"`
	ID        string `json:"id"`
	Name      string `json:"name"`
}

// MembershipTable maps the membership table: one row per member and
// organization, with a role and a state.
type MembershipTable struct {
	Table        string `json:"table"`
	EntitySet    string `json:"entity_set"`
	ID           string `json:"id"`
	Member       string `json:"member"`       // lookup to the member table
	Organization string `json:"organization"` // lookup to the organization table
	Role         string `json:"role"`         // option set
	State        string `json:"state"`        // statecode: 0 active, 1 inactive
	ModifiedOn   string `json:"modified_on"`
	// Roles maps the option set's values to roles.
	Roles map[string]event.Role `json:"roles"`
	// ActiveStates and InactiveStates list the state values. Defaults [0]
	// and [1], Dataverse's statecode.
	ActiveStates   []int `json:"active_states"`
	InactiveStates []int `json:"inactive_states"`
}

// DefaultMapping is the mapping used without a file: Dynamics 365's
// standard contact and account tables and a custom membership table.
func DefaultMapping() Mapping {
	return Mapping{
		Member: MemberTable{
			Table: "contact", EntitySet: "contacts", ID: "contactid", FirstName: "firstname", LastName: "lastname",
			Email: "emailaddress1", Phone: "mobilephone", Organization: "parentcustomerid", ModifiedOn: "modifiedon",
			Messages: map[string]event.Type{"create": event.MembershipUpdated, "update": event.MembershipUpdated, "delete": event.MemberDeleted},
		},
		Organization: OrganizationTable{Table: "account", EntitySet: "accounts", ID: "accountid", Name: "name"},
		Membership: MembershipTable{
			Table: "hlf_membership", EntitySet: "hlf_memberships", ID: "hlf_membershipid", Member: "hlf_contactid", Organization: "hlf_accountid",
			Role: "hlf_role", State: "statecode", ModifiedOn: "modifiedon",
			Roles:        map[string]event.Role{"100000000": event.RolePeerMentor, "100000001": event.RoleCoordinator, "100000002": event.RoleOrgAdmin},
			ActiveStates: []int{0}, InactiveStates: []int{1},
		},
	}
}

// LoadMapping reads a mapping file over the defaults; an empty path gives
// the defaults. Unknown keys are an error, so a typo does not pass
// silently. The result is validated.
func LoadMapping(path string) (Mapping, error) {
	m := DefaultMapping()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Mapping{}, fmt.Errorf("dataverse mapping: %w", err)
		}
		// Messages and roles given in the file replace the defaults whole.
		m.Member.Messages, m.Membership.Roles = nil, nil
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			return Mapping{}, fmt.Errorf("dataverse mapping %s: %w", path, err)
		}
		def := DefaultMapping()
		if m.Member.Messages == nil {
			m.Member.Messages = def.Member.Messages
		}
		if m.Membership.Roles == nil {
			m.Membership.Roles = def.Membership.Roles
		}
	}
	m = m.normalized()
	if err := m.Validate(); err != nil {
		return Mapping{}, fmt.Errorf("dataverse mapping %s: %w", path, err)
	}
	return m, nil
}

func (m Mapping) normalized() Mapping {
	low := func(s *string) { *s = strings.ToLower(strings.TrimSpace(*s)) }
	for _, s := range []*string{&m.Member.Table, &m.Member.ID, &m.Member.FirstName, &m.Member.LastName, &m.Member.Email,
		&m.Member.Phone, &m.Member.Organization, &m.Member.ModifiedOn, &m.Organization.Table, &m.Organization.ID,
		&m.Organization.Name, &m.Membership.Table, &m.Membership.ID, &m.Membership.Member, &m.Membership.Organization,
		&m.Membership.Role, &m.Membership.State, &m.Membership.ModifiedOn,
		&m.Member.EntitySet, &m.Organization.EntitySet, &m.Membership.EntitySet} {
		low(s)
	}
	msgs := make(map[string]event.Type, len(m.Member.Messages))
	for k, v := range m.Member.Messages {
		msgs[strings.ToLower(k)] = v
	}
	m.Member.Messages = msgs
	return m
}

var logicalName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,99}$`)

// Validate reports every problem of the mapping at once.
func (m Mapping) Validate() error {
	var errs []error
	name := func(field, v string) {
		if !logicalName.MatchString(v) {
			errs = append(errs, fmt.Errorf("%s: %q is not a Dataverse logical name", field, v))
		}
	}
	name("member.table", m.Member.Table)
	name("member.entity_set", m.Member.EntitySet)
	name("organization.entity_set", m.Organization.EntitySet)
	name("membership.entity_set", m.Membership.EntitySet)
	name("member.id", m.Member.ID)
	name("member.first_name", m.Member.FirstName)
	name("member.last_name", m.Member.LastName)
	name("member.email", m.Member.Email)
	name("member.phone", m.Member.Phone)
	name("member.organization", m.Member.Organization)
	name("member.modified_on", m.Member.ModifiedOn)
	name("organization.table", m.Organization.Table)
	name("organization.id", m.Organization.ID)
	name("organization.name", m.Organization.Name)
	name("membership.table", m.Membership.Table)
	name("membership.id", m.Membership.ID)
	name("membership.member", m.Membership.Member)
	name("membership.organization", m.Membership.Organization)
	name("membership.role", m.Membership.Role)
	name("membership.state", m.Membership.State)
	name("membership.modified_on", m.Membership.ModifiedOn)
	if m.Member.Table == m.Organization.Table || m.Member.Table == m.Membership.Table || m.Organization.Table == m.Membership.Table {
		errs = append(errs, errors.New("member, organization and membership must be three different tables"))
	}
	for msg, typ := range m.Member.Messages {
		switch msg {
		case "create", "update", "delete":
		default:
			errs = append(errs, fmt.Errorf("member.messages: %q is not Create, Update or Delete", msg))
		}
		switch {
		case typ == event.MemberDeleted && msg != "delete":
			errs = append(errs, fmt.Errorf("member.messages: only Delete may become %s", typ))
		case typ == event.MemberDeleted, typ == event.MembershipUpdated:
		default:
			errs = append(errs, fmt.Errorf("member.messages[%s]: %q is not membership-updated or member-deleted", msg, typ))
		}
	}
	if len(m.Membership.Roles) == 0 {
		errs = append(errs, errors.New("membership.roles: at least one option value must map to a role"))
	}
	for v, r := range m.Membership.Roles {
		if _, err := strconv.Atoi(v); err != nil {
			errs = append(errs, fmt.Errorf("membership.roles: %q is not an option set value (an integer)", v))
		}
		if !r.Valid() {
			errs = append(errs, fmt.Errorf("membership.roles[%s]: %q is not peer_mentor, coordinator or org_admin", v, r))
		}
	}
	if len(m.Membership.ActiveStates) == 0 || len(m.Membership.InactiveStates) == 0 {
		errs = append(errs, errors.New("membership: active_states and inactive_states must not be empty"))
	}
	for _, a := range m.Membership.ActiveStates {
		for _, i := range m.Membership.InactiveStates {
			if a == i {
				errs = append(errs, fmt.Errorf("membership: state %d is both active and inactive", a))
			}
		}
	}
	return errors.Join(errs...)
}
