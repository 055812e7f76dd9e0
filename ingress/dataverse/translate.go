package dataverse

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
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
// It is dvmap's RowError: what a row means is decided there, for the
// intake and the reconciler alike, with the same reasons.
type UntranslatableError = dvmap.RowError

// UntranslatableReasons lists every UntranslatableError.Reason, so that
// the ingress exports each one's counter from the start (the first
// refusal is then an increase an alert sees).
var UntranslatableReasons = []string{
	"bad-attribute", "invalid-event", "no-member", "no-organization", "no-state", "no-target", "no-time",
	"size-exceeded", "table-not-mapped", "target-mismatch", "unknown-role", "unknown-state",
}

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
	r := row(c, target)
	member, err := m.MemberOf(r)
	if err != nil {
		return Result{}, err
	}
	if msg == "update" && member.Present() == 0 {
		return Result{Ignored: fmt.Sprintf("no mapped column of %s changed", c.PrimaryEntityName)}, nil
	}
	org, err := m.MemberOrganization(r)
	if err != nil {
		return Result{}, hint(err, "in the Target or a post-image; register a post-image with it on the step")
	}
	at, err := modifiedOn(c, target, m.Member.ModifiedOn)
	if err != nil {
		return Result{}, err
	}
	ev := &event.Event{ID: eventID(c, ""), Type: typ, OccurredAt: at, Member: member, Organization: org}
	return build(ev)
}

// row is the context's row for the mapping: the columns of target (the
// Target, or the state of a SetState), and the post- and pre-images for
// its lookups (an Update's Target holds only what changed).
func row(c *Context, target *Entity) dvmap.Row {
	r := dvmap.Row{Table: c.PrimaryEntityName, ID: c.PrimaryEntityID, Columns: columns(target.Attributes)}
	for _, imgs := range []map[string]*Entity{c.PostEntityImages, c.PreEntityImages} {
		for _, k := range slices.Sorted(maps.Keys(imgs)) {
			r.Images = append(r.Images, columns(imgs[k].Attributes))
		}
	}
	return r
}

func columns(attrs map[string]Value) map[string]dvmap.Value {
	out := make(map[string]dvmap.Value, len(attrs))
	for name, v := range attrs {
		switch v.Kind {
		case KindNull:
			out[name] = dvmap.Value{Kind: dvmap.KindNull}
		case KindString:
			out[name] = dvmap.Value{Kind: dvmap.KindString, Str: v.Str}
		case KindOption:
			out[name] = dvmap.Value{Kind: dvmap.KindOption, Num: v.Num}
		case KindReference:
			out[name] = dvmap.Value{Kind: dvmap.KindReference, Str: v.Str, Table: v.Logical, Name: v.Name}
		default:
			// A bare number where an OptionSetValue belongs is no option.
			out[name] = dvmap.Value{Kind: dvmap.KindOther}
		}
	}
	return out
}

// hint adds to a missing lookup's detail where a context should have
// carried it.
func hint(err error, where string) error {
	var ue *UntranslatableError
	if errors.As(err, &ue) && (ue.Reason == "no-organization" || ue.Reason == "no-member") {
		ue.Detail += " " + where
	}
	return err
}

func translateMembership(c *Context, m dvmap.Mapping, msg string) (Result, error) {
	target, err := membershipTarget(c, m.Membership, msg)
	if err != nil {
		return Result{}, err
	}
	if target == nil {
		return Result{Ignored: fmt.Sprintf("message %s of %s is not mapped", c.MessageName, c.PrimaryEntityName)}, nil
	}
	r := row(c, target)

	// What the change means, before the lookups are needed.
	state, err := m.MembershipState(r)
	if err != nil {
		return Result{}, err
	}
	role, err := m.MembershipRole(r)
	if err != nil {
		return Result{}, err
	}
	steps := membershipSteps(msg, state, role)
	if len(steps) == 0 {
		return Result{Ignored: fmt.Sprintf("no mapped column of %s changed", c.PrimaryEntityName)}, nil
	}

	member, org, err := m.MembershipParties(r)
	if err != nil {
		return Result{}, hint(err, "in the Target or an image; register a pre- or post-image with it on the step")
	}
	var at time.Time
	if msg == "delete" {
		at, err = operationTime(c) // an image's modifiedon is the row's last change, not its deletion
	} else {
		at, err = modifiedOn(c, target, m.Membership.ModifiedOn)
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
			Member: event.Member{ID: member}, Organization: org}
		r, err := build(ev)
		if err != nil {
			return Result{}, err
		}
		res.Events = append(res.Events, r.Events...)
	}
	return res, nil
}

// membershipTarget is the membership row's change that message msg
// carries: the Target of a create or update, the new state of a SetState,
// no column of a delete; nil for a message that is not mapped.
func membershipTarget(c *Context, mt dvmap.MembershipTable, msg string) (*Entity, error) {
	switch msg {
	case "create", "update":
		return targetEntity(c)
	case "setstate", "setstatedynamicentity":
		v, ok := c.InputParameters["state"]
		if !ok || v.Kind != KindOption {
			return nil, untranslatable("no-state", "%s of %s carries no State", c.MessageName, c.PrimaryEntityName)
		}
		// The new state, as the row's state column.
		return &Entity{LogicalName: c.PrimaryEntityName, ID: c.PrimaryEntityID, Attributes: map[string]Value{mt.State: v}}, nil
	case "delete":
		return &Entity{LogicalName: c.PrimaryEntityName, ID: c.PrimaryEntityID, Attributes: map[string]Value{}}, nil
	}
	return nil, nil
}

// membershipStep is one event a membership change becomes.
type membershipStep struct {
	typ  event.Type
	role event.Role
}

// membershipSteps are the events, in order, that message msg on a
// membership row means, given the row's state and role ("" where the
// change does not carry them). A created row without a role is an update
// of the membership (the member and organization, nothing else).
func membershipSteps(msg string, state dvmap.State, role event.Role) []membershipStep {
	var steps []membershipStep
	switch msg {
	case "create":
		if role != "" {
			steps = append(steps, membershipStep{event.MembershipCreated, role})
		} else {
			steps = append(steps, membershipStep{typ: event.MembershipUpdated})
		}
		if state == dvmap.StateInactive {
			steps = append(steps, membershipStep{typ: event.MembershipDeactivated})
		}
	case "update", "setstate", "setstatedynamicentity":
		switch state {
		case dvmap.StateInactive:
			steps = append(steps, membershipStep{typ: event.MembershipDeactivated})
		case dvmap.StateActive:
			steps = append(steps, membershipStep{typ: event.MembershipReactivated})
		}
		if role != "" {
			steps = append(steps, membershipStep{event.RoleUpdated, role})
		}
	case "delete":
		steps = append(steps, membershipStep{typ: event.MembershipDeactivated})
	}
	return steps
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

// build encodes the event as the contract's JSON (dvmap.Encode: exactly
// what a signed portal webhook would carry, every contract rule applied).
func build(ev *event.Event) (Result, error) {
	body, dec, err := dvmap.Encode(ev)
	if err != nil {
		return Result{}, err
	}
	return Result{Events: []Translated{{Event: dec, Body: body}}}, nil
}

// Refusal is what the ingress publishes of a change it authenticated but
// refused (an UntranslatableError), so that the organization's admins see
// it in the sync log: ids and the reason, no personal value.
type Refusal struct {
	// ID names the refusal, as an event id would (stable across retries
	// of the same change).
	ID string
	// MemberID is the member's portal id when the change is a member
	// row's (its row id); "" otherwise.
	MemberID string
	// RowID is the Dataverse row's id (canonical).
	RowID string
	// OrgID is the organization's portal id where the context names it
	// ("" when it does not: a body Dataverse stripped, a lookup missing).
	OrgID string
	// Detail says what was refused and why, without values.
	Detail string
}

// Refused describes a change Translate refused with ue, from what the
// context still holds.
func Refused(c *Context, m dvmap.Mapping, ue *UntranslatableError) Refusal {
	r := Refusal{ID: eventID(c, "refused"), RowID: event.CanonicalID(c.PrimaryEntityID)}
	target, err := targetEntity(c)
	if err != nil {
		target = &Entity{LogicalName: c.PrimaryEntityName, ID: c.PrimaryEntityID, Attributes: map[string]Value{}}
	}
	rw := row(c, target)
	switch c.PrimaryEntityName {
	case m.Member.Table:
		r.MemberID = r.RowID
		if org, err := m.MemberOrganization(rw); err == nil {
			r.OrgID = event.CanonicalID(org.ID)
		}
	case m.Membership.Table:
		if member, org, err := m.MembershipParties(rw); err == nil {
			r.MemberID, r.OrgID = event.CanonicalID(member), event.CanonicalID(org.ID)
		}
	}
	r.Detail = fmt.Sprintf("the ingress refused Dataverse %s of %s %s: %s; left to reconciliation",
		c.MessageName, c.PrimaryEntityName, r.RowID, ue.Reason)
	return r
}
