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

// ErrNotUTF8 is returned by Decode when the body is not valid UTF-8 (JSON
// text must be, RFC 8259); decoding it anyway would replace bytes with
// U+FFFD and store corrupted names.
var ErrNotUTF8 = errors.New("body is not valid UTF-8")

// wire mirrors Event with the time as text and the nested objects as
// pointers, so that a malformed value is reported against its field and a
// missing object is told apart from an empty one, in one decoding pass.
type wire struct {
	ID           string      `json:"id"`
	Type         string      `json:"type"`
	OccurredAt   string      `json:"occurred_at"`
	Organization *orgWire    `json:"organization"`
	Member       *memberWire `json:"member"`
	Role         string      `json:"role"`
}

type orgWire struct {
	ID   string   `json:"id"`
	Name nullable `json:"name"`
}

type memberWire struct {
	ID        string   `json:"id"`
	Email     nullable `json:"email"`
	FirstName nullable `json:"first_name"`
	LastName  nullable `json:"last_name"`
	Phone     nullable `json:"phone"`
}

// nullable is a merge-patch string: absent, null, or a value.
type nullable struct {
	set bool
	s   string
}

func (n *nullable) UnmarshalJSON(b []byte) error {
	n.set = true
	if string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, &n.s)
}

// cleared reports whether the field is present and clears the value.
func (n nullable) cleared() bool { return n.set && n.s == "" }

func (w *memberWire) member() Member {
	m := Member{ID: CanonicalID(w.ID), Email: w.Email.s, FirstName: w.FirstName.s, LastName: w.LastName.s, Phone: w.Phone.s}
	for f, n := range map[Field]nullable{FieldEmail: w.Email, FieldFirstName: w.FirstName, FieldLastName: w.LastName, FieldPhone: w.Phone} {
		if n.cleared() {
			m.Cleared = m.Cleared.With(f)
		}
	}
	return m
}

// CanonicalID returns the one form an ID is stored and keyed in: a GUID
// (Dynamics IDs are, and compare case-insensitively), in any case and with
// or without braces, becomes lower case without braces; any other ID is
// returned as it is.
func CanonicalID(id string) string {
	g := id
	if len(g) == 38 && g[0] == '{' && g[37] == '}' {
		g = g[1:37]
	}
	if len(g) != 36 {
		return id
	}
	for i := 0; i < 36; i++ {
		c := g[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return id
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return id
			}
		}
	}
	return strings.ToLower(g)
}

// CheckClock returns a ValidationError naming occurred_at when the event is
// dated more than tolerance after now: a portal clock that far ahead would
// otherwise win every later newest-wins comparison for the member.
func (e *Event) CheckClock(now time.Time, tolerance time.Duration) error {
	if ahead := e.OccurredAt.Sub(now); ahead > tolerance {
		return ValidationError{{Field: "occurred_at", Reason: fmt.Sprintf("is %s ahead of the receiver's clock (at most %s allowed)", ahead.Round(time.Second), tolerance)}}
	}
	return nil
}

// Decode parses and validates one event. It returns an error wrapping
// ErrNotJSON when the body is not a single JSON object, and a
// ValidationError when fields are missing or malformed. Unknown fields are
// ignored so the portal can add fields; unknown event types decode without
// error (see Type.Known) as long as the envelope is valid.
func Decode(body []byte) (*Event, error) {
	if !utf8.Valid(body) {
		return nil, ErrNotUTF8
	}
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
		// PostgreSQL keeps microseconds: the order used in memory must be
		// the one the database compares.
		ev.OccurredAt = t.UTC().Truncate(time.Microsecond)
	}

	decodeParties(&w, ev, add)
	if len(errs) > 0 {
		return nil, errs
	}
	return ev, nil
}

// decodeParties takes the member, the organization and the role from w
// into ev, checking them as ev's type requires.
func decodeParties(w *wire, ev *Event, add func(field, reason string)) {
	known := ev.Type.Known()
	if w.Member == nil {
		add("member", "is required")
	} else {
		ev.Member = w.Member.member()
		if r := checkID(ev.Member.ID); r != "" {
			add("member.id", r)
		}
		if known {
			checkMember(&ev.Member, add)
		}
	}
	if known && ev.Type.NeedsOrganization() {
		if w.Organization == nil {
			add("organization", "is required")
		} else {
			ev.Organization = Organization{ID: CanonicalID(w.Organization.ID), Name: w.Organization.Name.s, NameCleared: w.Organization.Name.cleared()}
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
	if !ev.Type.NeedsOrganization() && w.Organization != nil && checkID(CanonicalID(w.Organization.ID)) == "" {
		// Not validated for an unknown type, but kept when well-formed,
		// so that its skipped log row reaches the organization's admins.
		ev.Organization = Organization{ID: CanonicalID(w.Organization.ID)}
	}
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

// ValidID reports whether id is a valid portal ID (after CanonicalID).
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
