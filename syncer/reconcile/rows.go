package reconcile

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	// skip says why the row became no event ("" when it did); refused is
	// the reason when the mapping refused the row (dvmap.RowError's, the
	// intake's answer for the same row).
	skip    string
	refused string
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
		return memberRow(m, row)
	}
	return membershipRow(m, row)
}

// The Web API names a lookup's table in the annotation
// <column>@Microsoft.Dynamics.CRM.lookuplogicalname, sent only when the
// request asks for it (Prefer: odata.include-annotations, client.go): the
// id alone does not say which table it is in.
const lookupTableAnnotation = "@Microsoft.Dynamics.CRM.lookuplogicalname"

// webRow is a Web API row of table k for the mapping: every selected
// column (one the row leaves out is null, as Dataverse sends it), lookups
// under their logical names with the table their annotation names, option
// set values (numbers) as options.
func webRow(m dvmap.Mapping, k Kind, id string, row map[string]any) dvmap.Row {
	table := m.Member.Table
	if k == KindMembership {
		table = m.Membership.Table
	}
	r := dvmap.Row{Table: table, ID: id, Columns: map[string]dvmap.Value{}}
	for _, col := range selectColumns(m, k) {
		name := col
		if n, ok := strings.CutPrefix(col, "_"); ok && strings.HasSuffix(n, "_value") {
			name = strings.TrimSuffix(n, "_value")
		}
		var v dvmap.Value
		switch x := row[col].(type) {
		case nil:
			v.Kind = dvmap.KindNull
		case string:
			v = dvmap.Value{Kind: dvmap.KindString, Str: x}
			if name != col {
				table, _ := row[col+lookupTableAnnotation].(string)
				v = dvmap.Value{Kind: dvmap.KindReference, Str: x, Table: strings.ToLower(table)}
			}
		case float64:
			v = dvmap.Value{Kind: dvmap.KindOption, Num: x}
		default:
			v.Kind = dvmap.KindOther
		}
		r.Columns[name] = v
	}
	return r
}

// refused is the rowEvent of a row the mapping refuses (a dvmap.RowError:
// the same reason the intake answers), or the error as it is.
func refused(err error) (rowEvent, error) {
	var re *dvmap.RowError
	if errors.As(err, &re) {
		return rowEvent{skip: re.Error(), refused: re.Reason}, nil
	}
	return rowEvent{}, err
}

func memberRow(m dvmap.Mapping, row map[string]any) (rowEvent, error) {
	mt := m.Member
	id, _ := row[mt.ID].(string)
	if !event.ValidID(id) {
		return rowEvent{}, fmt.Errorf("row without a valid %s", mt.ID)
	}
	r := webRow(m, KindMember, id, row)
	member, err := m.MemberOf(r) // a full row: every field set or cleared
	if err != nil {
		return refused(err)
	}
	org, err := m.MemberOrganization(r)
	if err != nil {
		return refused(err)
	}
	at, err := rowTime(row, mt.ModifiedOn)
	if err != nil {
		return rowEvent{}, err
	}
	ev := &event.Event{ID: rowID(KindMember, id, version(row)), Type: event.MembershipUpdated, OccurredAt: at,
		Member: member, Organization: org}
	return finish(rowEvent{ev: ev})
}

func membershipRow(m dvmap.Mapping, row map[string]any) (rowEvent, error) {
	mt := m.Membership
	id, _ := row[mt.ID].(string)
	if !event.ValidID(id) {
		return rowEvent{}, fmt.Errorf("row without a valid %s", mt.ID)
	}
	r := webRow(m, KindMembership, id, row)
	member, org, err := m.MembershipParties(r)
	if err != nil {
		return refused(err)
	}
	at, err := rowTime(row, mt.ModifiedOn)
	if err != nil {
		return rowEvent{}, err
	}
	state, err := m.MembershipState(r)
	if err != nil {
		return refused(err)
	}
	if state == dvmap.StateNone {
		return rowEvent{skip: "no " + mt.State}, nil
	}
	ms := &Membership{Member: member, Org: org.ID, Active: state == dvmap.StateActive}
	if ms.Role, err = m.MembershipRole(r); err != nil {
		// No event, as the intake refuses it; but the membership is in
		// the portal as it is, so a full read must not correct it away.
		re, err := refused(err)
		re.membership = ms
		return re, err
	}
	ev := &event.Event{ID: rowID(KindMembership, id, version(row)), OccurredAt: at,
		Member: event.Member{ID: ms.Member}, Organization: org}
	switch {
	case ms.Active && ms.Role != "":
		ev.Type, ev.Role = event.MembershipCreated, ms.Role
	case ms.Active:
		ev.Type = event.MembershipReactivated
	default:
		ev.Type = event.MembershipDeactivated
	}
	r2, err := finish(rowEvent{ev: ev})
	r2.membership = ms
	return r2, err
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

// finish encodes the event as the contract's JSON and validates it
// (dvmap.Encode, as the intake does).
func finish(r rowEvent) (rowEvent, error) {
	if r.ev.Type == event.MemberDeleted && r.ev.OccurredAt.IsZero() {
		return r, nil // stamped when published (a $deletedEntity row has no time)
	}
	body, _, err := dvmap.Encode(r.ev)
	if err != nil {
		return rowEvent{}, fmt.Errorf("event %s: %w", r.ev.ID, err)
	}
	r.body = body
	return r, nil
}
