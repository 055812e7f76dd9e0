package eventmodel

import "github.com/likeperson/portalsync/pkg/event"

// OrganizationNames returns the expected name of every organization the
// events name: that of the newest event (by time, then event id) of a
// known type that carries a name (a null clears it to ""); "" for an
// organization no such event names, whose row is only created. The name
// is a patch like a profile field: an event without one leaves it alone.
// An erased member's events count: the name is the organization's, not
// the member's personal data.
func OrganizationNames(events []event.Event) map[string]string {
	newest := map[string]*event.Event{}
	out := map[string]string{}
	for i := range events {
		e := &events[i]
		if !e.Type.Known() || e.Organization.ID == "" {
			continue
		}
		if _, ok := out[e.Organization.ID]; !ok {
			out[e.Organization.ID] = ""
		}
		if !e.Organization.HasName() {
			continue
		}
		if n := newest[e.Organization.ID]; n == nil || newer(e, n) {
			newest[e.Organization.ID] = e
			out[e.Organization.ID] = e.Organization.Name
		}
	}
	return out
}
