package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/event"
)

// IDPrefix starts every reconciler event id. It sorts before the Dataverse
// intake's "dv.": when a webhook and the reconciler deliver the same
// change (the same modifiedon), the syncer's tie-break (the greater id
// wins) keeps the webhook's event, and the reconciler's is superseded.
const IDPrefix = "dr."

// Kind of a row's table.
type Kind uint8

// The tables the reconciler reads.
const (
	KindMember Kind = iota + 1
	KindMembership
)

func (k Kind) String() string {
	if k == KindMember {
		return "member"
	}
	return "membership"
}

// Membership is one membership as the portal or the app holds it.
type Membership struct {
	Member, Org string
	Active      bool
	Role        event.Role
}

// rowEvent is what one row becomes.
type rowEvent struct {
	ev   *event.Event
	body []byte
	// membership is set for a membership row (its state in the portal).
	membership *Membership
	// deletedMembership: a membership row was deleted; the member and
	// organization are not in a $deletedEntity row.
	deletedMembership bool
	// skip says why the row became no event ("" when it did).
	skip string
}

// lookupColumn is how the Web API names a lookup's id: _<name>_value.
func lookupColumn(name string) string { return "_" + name + "_value" }

// selectColumns are the $select of a table.
func selectColumns(m dvmap.Mapping, k Kind) []string {
	if k == KindMember {
		mt := m.Member
		return []string{mt.ID, mt.FirstName, mt.LastName, mt.Email, mt.Phone, lookupColumn(mt.Organization), mt.ModifiedOn, "versionnumber"}
	}
	mt := m.Membership
	return []string{mt.ID, lookupColumn(mt.Member), lookupColumn(mt.Organization), mt.Role, mt.State, mt.ModifiedOn, "versionnumber"}
}

// translateRow maps one Web API row to an event.
func translateRow(m dvmap.Mapping, k Kind, row map[string]any) (rowEvent, error) {
	if ctx, _ := row["@odata.context"].(string); strings.HasSuffix(ctx, "$deletedEntity") {
		id, _ := row["id"].(string)
		if !event.ValidID(id) {
			return rowEvent{}, errors.New("deleted row without a valid id")
		}
		if k == KindMembership {
			return rowEvent{deletedMembership: true, skip: "membership deleted: the next full read deactivates it"}, nil
		}
		ev := &event.Event{ID: rowID(k, id, "deleted"), Type: event.MemberDeleted, OccurredAt: time.Time{}, Member: event.Member{ID: event.CanonicalID(id)}}
		return finish(rowEvent{ev: ev})
	}
	if k == KindMember {
		return memberRow(m.Member, row)
	}
	return membershipRow(m, row)
}

func memberRow(mt dvmap.MemberTable, row map[string]any) (rowEvent, error) {
	id, _ := row[mt.ID].(string)
	if !event.ValidID(id) {
		return rowEvent{}, fmt.Errorf("row without a valid %s", mt.ID)
	}
	org, _ := row[lookupColumn(mt.Organization)].(string)
	if !event.ValidID(org) {
		return rowEvent{skip: "no organization (" + mt.Organization + ")"}, nil
	}
	at, err := rowTime(row, mt.ModifiedOn)
	if err != nil {
		return rowEvent{}, err
	}
	member := event.Member{ID: event.CanonicalID(id)}
	for f, col := range map[event.Field]string{event.FieldEmail: mt.Email, event.FieldFirstName: mt.FirstName, event.FieldLastName: mt.LastName, event.FieldPhone: mt.Phone} {
		s, _ := row[col].(string)
		s = strings.TrimSpace(s)
		if s == "" {
			member.Cleared = member.Cleared.With(f) // a full row: null is no value
			continue
		}
		switch f {
		case event.FieldEmail:
			member.Email = s
		case event.FieldFirstName:
			member.FirstName = s
		case event.FieldLastName:
			member.LastName = s
		case event.FieldPhone:
			member.Phone = s
		}
	}
	ev := &event.Event{ID: rowID(KindMember, id, version(row)), Type: event.MembershipUpdated, OccurredAt: at,
		Member: member, Organization: event.Organization{ID: event.CanonicalID(org)}}
	return finish(rowEvent{ev: ev})
}

func membershipRow(m dvmap.Mapping, row map[string]any) (rowEvent, error) {
	mt := m.Membership
	id, _ := row[mt.ID].(string)
	if !event.ValidID(id) {
		return rowEvent{}, fmt.Errorf("row without a valid %s", mt.ID)
	}
	member, _ := row[lookupColumn(mt.Member)].(string)
	org, _ := row[lookupColumn(mt.Organization)].(string)
	if !event.ValidID(member) || !event.ValidID(org) {
		return rowEvent{skip: "no member or organization"}, nil
	}
	at, err := rowTime(row, mt.ModifiedOn)
	if err != nil {
		return rowEvent{}, err
	}
	state, ok := row[mt.State].(float64)
	if !ok {
		return rowEvent{skip: "no " + mt.State}, nil
	}
	ms := &Membership{Member: event.CanonicalID(member), Org: event.CanonicalID(org)}
	switch {
	case slices.Contains(mt.ActiveStates, int(state)):
		ms.Active = true
	case slices.Contains(mt.InactiveStates, int(state)):
	default:
		return rowEvent{skip: "state neither active nor inactive"}, nil
	}
	if v, ok := row[mt.Role].(float64); ok {
		ms.Role = mt.Roles[strconv.FormatInt(int64(v), 10)]
	}
	ev := &event.Event{ID: rowID(KindMembership, id, version(row)), OccurredAt: at,
		Member: event.Member{ID: ms.Member}, Organization: event.Organization{ID: ms.Org}}
	switch {
	case ms.Active && ms.Role != "":
		ev.Type, ev.Role = event.MembershipCreated, ms.Role
	case ms.Active:
		ev.Type = event.MembershipReactivated
	default:
		ev.Type = event.MembershipDeactivated
	}
	r, err := finish(rowEvent{ev: ev})
	r.membership = ms
	return r, err
}

// correction deactivates a membership the app holds active and the portal
// does not.
func correction(ms Membership, at time.Time, pass string) (rowEvent, error) {
	sum := sha256.Sum256([]byte(ms.Member + "|" + ms.Org))
	ev := &event.Event{ID: IDPrefix + "fix." + hex.EncodeToString(sum[:8]) + "." + pass, Type: event.MembershipDeactivated,
		OccurredAt: at, Member: event.Member{ID: ms.Member}, Organization: event.Organization{ID: ms.Org}}
	return finish(rowEvent{ev: ev})
}

// rowID is the event id of a row's version: stable, so reading the same
// version again (an interrupted pass) is a duplicate; the row id enters as
// a hash, so erasure leaves no member ID in a kept event id.
func rowID(k Kind, id, version string) string {
	sum := sha256.Sum256([]byte(event.CanonicalID(id)))
	return IDPrefix + k.String() + "." + hex.EncodeToString(sum[:8]) + "." + version
}

func version(row map[string]any) string {
	switch v := row["versionnumber"].(type) {
	case float64:
		return strconv.FormatInt(int64(v), 10)
	case string:
		if event.ValidID(v) {
			return v
		}
	}
	return "0"
}

func rowTime(row map[string]any, col string) (time.Time, error) {
	s, _ := row[col].(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("row has no valid %s", col)
	}
	return t.UTC(), nil
}

// finish encodes the event as the contract's JSON and validates it.
func finish(r rowEvent) (rowEvent, error) {
	if r.ev.Type == event.MemberDeleted && r.ev.OccurredAt.IsZero() {
		return r, nil // stamped when published (a $deletedEntity row has no time)
	}
	body, err := encode(r.ev)
	if err != nil {
		return rowEvent{}, err
	}
	r.body = body
	return r, nil
}

func encode(ev *event.Event) ([]byte, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.ID, err)
	}
	if ev.Type == event.MemberDeleted {
		var w map[string]any
		_ = json.Unmarshal(body, &w)
		delete(w, "organization")
		body, _ = json.Marshal(w)
	}
	if _, err := event.Decode(body); err != nil {
		return nil, fmt.Errorf("event %s: %w", ev.ID, err)
	}
	return body, nil
}
