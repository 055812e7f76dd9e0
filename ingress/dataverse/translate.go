package dataverse

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
)

// Translated is one contract event made from a context, with the body the
// ingress stores (the contract's JSON, which event.Decode accepts).
type Translated struct {
	Event *event.Event
	Body  []byte
}

// Result is what one context becomes: events to publish, or a reason it
// needs none (a message or column the app does not mirror).
type Result struct {
	Events  []Translated
	Ignored string
}

// UntranslatableError says a context can never become an event as it is:
// a retry would not help, so the intake answers 4xx and logs it for
// reconciliation. Reason is a short slug; Detail names no personal data.
type UntranslatableError struct {
	Reason string
	Detail string
	Fields []event.FieldError
}

// UntranslatableReasons lists every UntranslatableError.Reason, so that
// the ingress exports each one's counter from the start (the first
// refusal is then an increase an alert sees).
var UntranslatableReasons = []string{
	"bad-attribute", "invalid-event", "no-member", "no-organization", "no-state", "no-target", "no-time",
	"size-exceeded", "table-not-mapped", "target-mismatch", "unknown-role", "unknown-state",
}

func (e *UntranslatableError) Error() string { return e.Reason + ": " + e.Detail }

func untranslatable(reason, format string, args ...any) *UntranslatableError {
	return &UntranslatableError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Translate maps a context to contract events. sizeExceeded is true when
// Dataverse stripped the body (HeaderMsgSizeExceeded): only a Delete of a
// member, which needs nothing but the id, can still be translated.
func Translate(c *Context, m dvmap.Mapping, sizeExceeded bool) (Result, error) {
	msg := strings.ToLower(c.MessageName)
	switch c.PrimaryEntityName {
	case m.Member.Table:
		return translateMember(c, m, msg, sizeExceeded)
	case m.Membership.Table:
		if sizeExceeded {
			return Result{}, sizeError(c)
		}
		return translateMembership(c, m, msg)
	case m.Organization.Table:
		return Result{Ignored: "organization rows travel with memberships: the name comes from the membership's lookup"}, nil
	}
	return Result{}, untranslatable("table-not-mapped", "table %s is not in the mapping (member %s, organization %s, membership %s); remove its step",
		c.PrimaryEntityName, m.Member.Table, m.Organization.Table, m.Membership.Table)
}

func sizeError(c *Context) *UntranslatableError {
	return untranslatable("size-exceeded", "Dataverse removed the %s of %s %s (over 256 KB); the change is left to reconciliation",
		"parameters and images", c.PrimaryEntityName, event.CanonicalID(c.PrimaryEntityID))
}

func translateMember(c *Context, m dvmap.Mapping, msg string, sizeExceeded bool) (Result, error) {
	typ, ok := m.Member.Messages[msg]
	if !ok {
		return Result{Ignored: fmt.Sprintf("message %s of %s is not mapped", c.MessageName, c.PrimaryEntityName)}, nil
	}
	memberID := event.CanonicalID(c.PrimaryEntityID)
	if typ == event.MemberDeleted {
		at, err := operationTime(c)
		if err != nil {
			return Result{}, err
		}
		ev := &event.Event{ID: eventID(c, ""), Type: event.MemberDeleted, OccurredAt: at, Member: event.Member{ID: memberID}}
		return build(ev)
	}
	if sizeExceeded {
		return Result{}, sizeError(c)
	}
	target, err := targetEntity(c)
	if err != nil {
		return Result{}, err
	}
	member := event.Member{ID: memberID}
	for field, attr := range map[event.Field]string{event.FieldFirstName: m.Member.FirstName, event.FieldLastName: m.Member.LastName,
		event.FieldEmail: m.Member.Email, event.FieldPhone: m.Member.Phone} {
		v, present := target.Attributes[attr]
		if !present {
			continue // a partial update: the column did not change
		}
		switch v.Kind {
		case KindNull:
			member.Cleared = member.Cleared.With(field)
		case KindString:
			if s := strings.TrimSpace(v.Str); s == "" {
				member.Cleared = member.Cleared.With(field)
			} else {
				setField(&member, field, s)
			}
		default:
			return Result{}, &UntranslatableError{Reason: "bad-attribute", Detail: fmt.Sprintf("%s.%s is not text", c.PrimaryEntityName, attr),
				Fields: []event.FieldError{{Field: "member." + field.String(), Reason: "not text"}}}
		}
	}
	if msg == "update" && member.Present() == 0 {
		return Result{Ignored: fmt.Sprintf("no mapped column of %s changed", c.PrimaryEntityName)}, nil
	}
	org, ok := lookup(c, target, m.Member.Organization, m.Organization.Table)
	if !ok {
		return Result{}, untranslatable("no-organization", "%s %s names no organization in %s (Target or a post-image); register a post-image with it on the step",
			c.PrimaryEntityName, memberID, m.Member.Organization)
	}
	at, err := modifiedOn(c, target, m.Member.ModifiedOn)
	if err != nil {
		return Result{}, err
	}
	ev := &event.Event{ID: eventID(c, ""), Type: typ, OccurredAt: at, Member: member, Organization: orgOf(org, m)}
	return build(ev)
}

func setField(m *event.Member, f event.Field, s string) {
	switch f {
	case event.FieldEmail:
		m.Email = s
	case event.FieldFirstName:
		m.FirstName = s
	case event.FieldLastName:
		m.LastName = s
	case event.FieldPhone:
		m.Phone = s
	}
}

func orgOf(ref Value, m dvmap.Mapping) event.Organization {
	o := event.Organization{ID: event.CanonicalID(ref.Str)}
	if ref.Logical == m.Organization.Table && strings.TrimSpace(ref.Name) != "" {
		o.Name = strings.TrimSpace(ref.Name)
	}
	return o
}

func translateMembership(c *Context, m dvmap.Mapping, msg string) (Result, error) {
	mt := m.Membership
	var target *Entity
	var state *int
	switch msg {
	case "create", "update":
		t, err := targetEntity(c)
		if err != nil {
			return Result{}, err
		}
		target = t
		if v, ok := t.Attributes[mt.State]; ok && v.Kind != KindNull {
			n, err := optionValue(c, mt.State, v)
			if err != nil {
				return Result{}, err
			}
			state = &n
		}
	case "setstate", "setstatedynamicentity":
		v, ok := c.InputParameters["state"]
		if !ok || v.Kind != KindOption {
			return Result{}, untranslatable("no-state", "%s of %s carries no State", c.MessageName, c.PrimaryEntityName)
		}
		n, err := optionValue(c, "State", v)
		if err != nil {
			return Result{}, err
		}
		state = &n
		target = &Entity{LogicalName: c.PrimaryEntityName, ID: c.PrimaryEntityID, Attributes: map[string]Value{}}
	case "delete":
		target = &Entity{LogicalName: c.PrimaryEntityName, ID: c.PrimaryEntityID, Attributes: map[string]Value{}}
	default:
		return Result{Ignored: fmt.Sprintf("message %s of %s is not mapped", c.MessageName, c.PrimaryEntityName)}, nil
	}

	// What the change means, before the lookups are needed.
	type step struct {
		typ  event.Type
		role event.Role
	}
	var steps []step
	var role event.Role
	roleVal, roleSet := target.Attributes[mt.Role]
	if roleSet && roleVal.Kind != KindNull {
		n, err := optionValue(c, mt.Role, roleVal)
		if err != nil {
			return Result{}, err
		}
		key := strconv.Itoa(n)
		r, ok := mt.Roles[key]
		if !ok {
			return Result{}, &UntranslatableError{Reason: "unknown-role", Detail: fmt.Sprintf("%s.%s value %s maps to no role", c.PrimaryEntityName, mt.Role, key),
				Fields: []event.FieldError{{Field: "role", Reason: "option value maps to no role"}}}
		}
		role = r
	}
	switch msg {
	case "create":
		if role != "" {
			steps = append(steps, step{event.MembershipCreated, role})
		} else {
			steps = append(steps, step{typ: event.MembershipUpdated})
		}
		if state != nil && slices.Contains(mt.InactiveStates, *state) {
			steps = append(steps, step{typ: event.MembershipDeactivated})
		}
	case "update", "setstate", "setstatedynamicentity":
		if state != nil {
			switch {
			case slices.Contains(mt.InactiveStates, *state):
				steps = append(steps, step{typ: event.MembershipDeactivated})
			case slices.Contains(mt.ActiveStates, *state):
				steps = append(steps, step{typ: event.MembershipReactivated})
			default:
				return Result{}, untranslatable("unknown-state", "%s.%s value %d is neither active nor inactive", c.PrimaryEntityName, mt.State, *state)
			}
		}
		if role != "" {
			steps = append(steps, step{event.RoleUpdated, role})
		}
	case "delete":
		steps = append(steps, step{typ: event.MembershipDeactivated})
	}
	if len(steps) == 0 {
		return Result{Ignored: fmt.Sprintf("no mapped column of %s changed", c.PrimaryEntityName)}, nil
	}

	memberRef, ok := lookup(c, target, mt.Member, m.Member.Table)
	if !ok {
		return Result{}, untranslatable("no-member", "%s %s names no member in %s (Target or an image); register a pre- or post-image with it on the step",
			c.PrimaryEntityName, event.CanonicalID(c.PrimaryEntityID), mt.Member)
	}
	orgRef, ok := lookup(c, target, mt.Organization, m.Organization.Table)
	if !ok {
		return Result{}, untranslatable("no-organization", "%s %s names no organization in %s (Target or an image); register a pre- or post-image with it on the step",
			c.PrimaryEntityName, event.CanonicalID(c.PrimaryEntityID), mt.Organization)
	}
	var at time.Time
	var err error
	if msg == "delete" {
		at, err = operationTime(c) // an image's modifiedon is the row's last change, not its deletion
	} else {
		at, err = modifiedOn(c, target, mt.ModifiedOn)
	}
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, s := range steps {
		suffix := ""
		if len(steps) > 1 {
			suffix = string(s.typ)
		}
		ev := &event.Event{ID: eventID(c, suffix), Type: s.typ, OccurredAt: at, Role: s.role,
			Member: event.Member{ID: event.CanonicalID(memberRef.Str)}, Organization: orgOf(orgRef, m)}
		r, err := build(ev)
		if err != nil {
			return Result{}, err
		}
		res.Events = append(res.Events, r.Events...)
	}
	return res, nil
}

// optionValue reads an option set column: an OptionSetValue whose Value is
// a whole number in Int32's range, as Dataverse's option values are. Any
// other shape (no Value, a string, a bare number, a fraction) is refused
// rather than ignored: ignoring a role would leave the member without the
// role the portal gives them.
func optionValue(c *Context, attr string, v Value) (int, error) {
	if v.Kind != KindOption || v.Num != math.Trunc(v.Num) || v.Num < math.MinInt32 || v.Num > math.MaxInt32 {
		return 0, &UntranslatableError{Reason: "bad-attribute", Detail: fmt.Sprintf("%s.%s is not an option set value", c.PrimaryEntityName, attr),
			Fields: []event.FieldError{{Field: attr, Reason: "not an option set value"}}}
	}
	return int(v.Num), nil
}

// targetEntity is the Target parameter of Create and Update. A Target of
// another row or table than PrimaryEntityName/PrimaryEntityId is refused:
// whose change it is would be a guess (ids compare in canonical form).
func targetEntity(c *Context) (*Entity, error) {
	v, ok := c.InputParameters["target"]
	if !ok || v.Kind != KindEntity {
		return nil, untranslatable("no-target", "%s of %s carries no Target entity", c.MessageName, c.PrimaryEntityName)
	}
	e := v.Entity
	if (e.ID != "" && event.CanonicalID(e.ID) != event.CanonicalID(c.PrimaryEntityID)) ||
		(e.LogicalName != "" && e.LogicalName != c.PrimaryEntityName) {
		return nil, untranslatable("target-mismatch", "the Target of %s of %s %s is another row or table than PrimaryEntityName/PrimaryEntityId",
			c.MessageName, c.PrimaryEntityName, event.CanonicalID(c.PrimaryEntityID))
	}
	return e, nil
}

// emptyGUID is Guid.Empty, which Dataverse may write for a lookup that
// points at no row.
const emptyGUID = "00000000-0000-0000-0000-000000000000"

// lookup finds a lookup column in the Target, then the post-images, then
// the pre-images (an Update's Target holds only what changed). A reference
// counts only when its id is a row id (braces and case are canonicalized),
// not Guid.Empty, and it points at table: a polymorphic lookup such as a
// contact's parentcustomerid (Customer: account or contact) may name a row
// of another table, whose id must not become an organization's.
func lookup(c *Context, target *Entity, attr, table string) (Value, bool) {
	for _, e := range entities(c, target) {
		v, ok := e.Attributes[attr]
		if !ok || v.Kind != KindReference {
			continue
		}
		id := event.CanonicalID(v.Str)
		if !event.ValidID(id) || id == emptyGUID || (v.Logical != "" && v.Logical != table) {
			continue
		}
		v.Str = id
		return v, true
	}
	return Value{}, false
}

func entities(c *Context, target *Entity) []*Entity {
	out := []*Entity{target}
	for _, imgs := range []map[string]*Entity{c.PostEntityImages, c.PreEntityImages} {
		keys := make([]string, 0, len(imgs))
		for k := range imgs {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			out = append(out, imgs[k])
		}
	}
	return out
}

// modifiedOn is the row's modification time from the Target or a
// post-image, else the operation's time.
func modifiedOn(c *Context, target *Entity, attr string) (time.Time, error) {
	cands := []*Entity{target}
	for _, e := range c.PostEntityImages {
		cands = append(cands, e)
	}
	for _, e := range cands {
		if v, ok := e.Attributes[attr]; ok && v.Kind == KindString {
			if t, err := ParseDate(v.Str); err == nil {
				return t, nil
			}
		}
	}
	return operationTime(c)
}

func operationTime(c *Context) (time.Time, error) {
	if c.OperationCreatedOn.IsZero() {
		return time.Time{}, untranslatable("no-time", "%s of %s carries neither modifiedon nor OperationCreatedOn", c.MessageName, c.PrimaryEntityName)
	}
	return c.OperationCreatedOn, nil
}

// eventID derives the event id from the operation, the table and the
// row, so the one retry Dataverse makes (the same context again) is a
// duplicate; suffix tells apart the events of one operation. The row id
// enters as a hash: for a contact it is the member ID, which erasure must
// be able to remove from every sync-log row, and an event id is kept.
func eventID(c *Context, suffix string) string {
	row := sha256.Sum256([]byte(event.CanonicalID(c.PrimaryEntityID)))
	id := "dv." + event.CanonicalID(c.OperationID) + "." + c.PrimaryEntityName + "." + hex.EncodeToString(row[:8])
	if suffix != "" {
		id += "." + suffix
	}
	if len(id) > event.MaxIDLength || !event.ValidID(id) {
		sum := sha256.Sum256([]byte(id))
		id = "dv.h." + hex.EncodeToString(sum[:20])
	}
	return id
}

// build encodes the event as the contract's JSON and decodes it back, so
// what is published is exactly what a signed portal webhook would carry
// and every contract rule (field lengths, e-mail, phone) applies.
func build(ev *event.Event) (Result, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return Result{}, fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	if ev.Type == event.MemberDeleted {
		var w map[string]any
		_ = json.Unmarshal(body, &w)
		delete(w, "organization") // it names none
		body, _ = json.Marshal(w)
	}
	dec, err := event.Decode(body)
	if err != nil {
		var verr event.ValidationError
		if errors.As(err, &verr) {
			return Result{}, &UntranslatableError{Reason: "invalid-event", Detail: verr.Error(), Fields: verr}
		}
		return Result{}, fmt.Errorf("decode built event %s: %w", ev.ID, err)
	}
	return Result{Events: []Translated{{Event: dec, Body: body}}}, nil
}
