package store

import (
	"github.com/likeperson/portalsync/pkg/event"
)

// statusIntent is the membership status an event type asks for, if any.
func statusIntent(t event.Type) string {
	switch t {
	case event.MembershipCreated, event.MembershipReactivated:
		return "active"
	case event.MembershipDeactivated:
		return "inactive"
	}
	return ""
}
