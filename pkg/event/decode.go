package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxIDLength is the longest portal, member or organization ID accepted.
const MaxIDLength = 128

// Limits on free-text fields; they stop a bad sender from filling the
// database, not a real portal.
const (
	maxTypeLength  = 64
	maxNameLength  = 200
	maxEmailLength = 254
	maxPhoneLength = 32
)

// FieldError says which field of an event is wrong and why.
type FieldError struct {
	// Field is the JSON path of the field, e.g. "member.id"; empty when the
	// document as a whole is wrong.
	Field string `json:"field,omitempty"`
	// Reason says what is wrong, without echoing the value.
	Reason string `json:"reason"`
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// ValidationError lists every problem found in one event.
type ValidationError []FieldError

func (v ValidationError) Error() string {
	parts := make([]string, len(v))
	for i, fe := range v {
		parts[i] = fe.Error()
	}
	return "invalid event: " + strings.Join(parts, "; ")
}

// ErrNotJSON is wrapped by Decode when the body is not a JSON object.
var ErrNotJSON = errors.New("body is not a JSON object")

// wire mirrors Event with the time as text and the nested objects as
// pointers, so that a malformed value is reported against its field and a
// missing object is told apart from an empty one, in one decoding pass.
type wire struct {
	ID           string        `json:"id"`
	Type         string        `json:"type"`
	OccurredAt   string        `json:"occurred_at"`
	Organization *Organization `json:"organization"`
	Member       *Member       `json:"member"`
	Role         string        `json:"role"`
}

// Decode parses and validates one event. It returns an error wrapping
// ErrNotJSON when the body is not a single JSON object, and a
// ValidationError when fields are missing or malformed. Unknown fields are
// ignored so the portal can add fields; unknown event types decode without
// error (see Type.Known) as long as the envelope is valid.
func Decode(body []byte) (*Event, error) {
	var w wire
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return nil, ValidationError{{Field: typeErr.Field, Reason: "must be a " + jsonKind(typeErr.Type.Kind().String())}}
		}
		return nil, fmt.Errorf("%w: %s", ErrNotJSON, syntaxReason(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: unexpected data after the object", ErrNotJSON)
	}

	var errs ValidationError
	add := func(field, reason string) { errs = append(errs, FieldError{Field: field, Reason: reason}) }

	ev := &Event{ID: w.ID, Type: Type(w.Type), Role: Role(w.Role)}
	if r := checkID(w.ID); r != "" {
		add("id", r)
	}
	switch {
	case w.Type == "":
		add("type", "is required")
	case len(w.Type) > maxTypeLength || !isToken(w.Type):
		add("type", "must be a short lower-case token")
	}
	if w.OccurredAt == "" {
		add("occurred_at", "is required")
	} else if t, err := time.Parse(time.RFC3339Nano, w.OccurredAt); err != nil {
		add("occurred_at", "must be an RFC 3339 timestamp")
	} else {
		ev.OccurredAt = t.UTC()
	}

	known := ev.Type.Known()
	if w.Member == nil {
		add("member", "is required")
	} else {
		ev.Member = *w.Member
		if r := checkID(ev.Member.ID); r != "" {
			add("member.id", r)
		}
		if known {
			checkMember(&ev.Member, add)
		}
	}
	if known {
		if w.Organization == nil {
			add("organization", "is required")
		} else {
			ev.Organization = *w.Organization
			if r := checkID(ev.Organization.ID); r != "" {
				add("organization.id", r)
			}
			if r := checkText(ev.Organization.Name, maxNameLength); r != "" {
				add("organization.name", r)
			}
		}
		switch {
		case ev.Role == "" && ev.Type.RequiresRole():
			add("role", "is required for "+string(ev.Type))
		case ev.Role != "" && !ev.Role.Valid():
			add("role", "must be one of peer_mentor, coordinator, org_admin")
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return ev, nil
}

func checkMember(m *Member, add func(string, string)) {
	if m.Email != "" {
		if len(m.Email) > maxEmailLength || !looksLikeEmail(m.Email) {
			add("member.email", "must be an e-mail address")
		}
	}
	if m.Phone != "" {
		if len(m.Phone) > maxPhoneLength || !looksLikePhone(m.Phone) {
			add("member.phone", "must be a phone number of digits, spaces and + - ( )")
		}
	}
	if r := checkText(m.FirstName, maxNameLength); r != "" {
		add("member.first_name", r)
	}
	if r := checkText(m.LastName, maxNameLength); r != "" {
		add("member.last_name", r)
	}
}

// checkID returns why id is not a valid portal ID, or "".
func checkID(id string) string {
	if id == "" {
		return "is required"
	}
	if len(id) > MaxIDLength {
		return fmt.Sprintf("must be at most %d characters", MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if !isIDByte(id[i]) {
			return "may hold only letters, digits, '-', '_' and '.'"
		}
	}
	return ""
}

// ValidID reports whether id is a valid portal ID.
func ValidID(id string) bool { return checkID(id) == "" }

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func checkText(s string, maxRunes int) string {
	if utf8.RuneCountInString(s) > maxRunes {
		return fmt.Sprintf("must be at most %d characters", maxRunes)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "must not contain control characters"
		}
	}
	return ""
}

func looksLikeEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || at != strings.LastIndexByte(s, '@') || at == len(s)-1 {
		return false
	}
	domain := s[at+1:]
	if strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") || strings.Contains(domain, "..") {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == ',' || r == '<' || r == '>' {
			return false
		}
	}
	return true
}

func looksLikePhone(s string) bool {
	digits := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == ' ' || c == '+' || c == '-' || c == '(' || c == ')':
		default:
			return false
		}
	}
	return digits >= 3
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	default:
		return goKind
	}
}

// syntaxReason describes a decoding error without echoing input.
func syntaxReason(err error) string {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "unexpected end of input"
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return "top level must be an object"
	}
	return "malformed JSON"
}
