// Package dataverse translates the webhooks of Microsoft Dataverse (the
// store of Dynamics 365 and so of the Min Side portal) into the project's
// event contract: it decodes the RemoteExecutionContext a Dataverse service
// endpoint posts, authenticates the request by key, and maps the tables and
// messages named in a declarative Mapping to membership events.
package dataverse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/likeperson/portalsync/pkg/event"
)

// Headers Dataverse sets on every webhook request.
const (
	HeaderOrganization    = "x-ms-dynamics-organization"
	HeaderEntityName      = "x-ms-dynamics-entity-name"
	HeaderRequestName     = "x-ms-dynamics-request-name"
	HeaderCorrelationID   = "x-ms-correlation-request-id"
	HeaderMsgSizeExceeded = "x-ms-dynamics-msg-size-exceeded"
)

// Context is the part of a RemoteExecutionContext the intake reads. When the
// request passed 256 KB Dataverse removes InputParameters, the images and
// ParentContext and sets HeaderMsgSizeExceeded; the names and ids remain.
type Context struct {
	MessageName        string
	PrimaryEntityName  string
	PrimaryEntityID    string
	OperationID        string
	OperationCreatedOn time.Time
	// InputParameters holds "Target" (an Entity, or an EntityReference for
	// Delete) and, for SetState, "EntityMoniker", "State" and "Status".
	InputParameters  map[string]Value
	PreEntityImages  map[string]*Entity
	PostEntityImages map[string]*Entity
}

// Entity is a Dataverse row as a context carries it: for Create the whole
// row, for Update only the attributes that changed.
type Entity struct {
	LogicalName string
	ID          string
	Attributes  map[string]Value
}

// Kind says what a Value holds.
type Kind uint8

// The kinds of attribute values in a context.
const (
	KindNull Kind = iota
	KindString
	KindNumber
	KindBool
	KindReference // EntityReference: a lookup
	KindOption    // OptionSetValue: {"Value": n}
	KindEntity    // a nested Entity (Target of Create and Update)
	KindOther     // money, collections, …: present, not read
)

// Value is one attribute or parameter value.
type Value struct {
	Kind Kind
	// Str is the text of a string, or the id of a reference; Name is a
	// reference's display name (Dataverse often sends null).
	Str     string
	Name    string
	Logical string // a reference's table
	Num     float64
	Bool    bool
	Entity  *Entity
}

// ErrNotContext is wrapped by Decode when the body is not a
// RemoteExecutionContext.
var ErrNotContext = errors.New("not a Dataverse RemoteExecutionContext")

type wireContext struct {
	MessageName        string   `json:"MessageName"`
	PrimaryEntityName  string   `json:"PrimaryEntityName"`
	PrimaryEntityID    string   `json:"PrimaryEntityId"`
	OperationID        string   `json:"OperationId"`
	OperationCreatedOn string   `json:"OperationCreatedOn"`
	InputParameters    []wireKV `json:"InputParameters"`
	PreEntityImages    []wireKV `json:"PreEntityImages"`
	PostEntityImages   []wireKV `json:"PostEntityImages"`
}

type wireKV struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

type wireEntity struct {
	Type        string   `json:"__type"`
	LogicalName string   `json:"LogicalName"`
	ID          string   `json:"Id"`
	Attributes  []wireKV `json:"Attributes"`
	Name        *string  `json:"Name"`
	Value       *float64 `json:"Value"`
}

// maxDepth bounds nested entities (a Target inside a parameter inside …).
const maxDepth = 4

// utf8BOM is the byte order mark a .NET writer may put before UTF-8 text.
var utf8BOM = []byte("\xef\xbb\xbf")

// Decode parses the JSON of a RemoteExecutionContext. It requires
// MessageName, PrimaryEntityName and PrimaryEntityId (the part Dataverse
// keeps when the body was too large) and an OperationId. A leading UTF-8
// byte order mark is skipped: the body is the same context, and a 400 for
// it would be final.
func Decode(body []byte) (*Context, error) {
	body = bytes.TrimPrefix(body, utf8BOM)
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("%w: body is not UTF-8", ErrNotContext)
	}
	var w wireContext
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotContext, err)
	}
	c := &Context{
		MessageName:       w.MessageName,
		PrimaryEntityName: strings.ToLower(w.PrimaryEntityName),
		PrimaryEntityID:   w.PrimaryEntityID,
		OperationID:       w.OperationID,
	}
	var missing []string
	for name, v := range map[string]string{"MessageName": c.MessageName, "PrimaryEntityName": c.PrimaryEntityName, "PrimaryEntityId": c.PrimaryEntityID, "OperationId": c.OperationID} {
		if v == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing %s", ErrNotContext, strings.Join(sorted(missing), ", "))
	}
	// Dataverse's row and operation ids are GUIDs; anything else is not a
	// context (and must not reach a log line as a "row id": it could be any
	// text, an e-mail address too).
	for _, f := range []struct {
		name string
		id   *string
	}{{"PrimaryEntityId", &c.PrimaryEntityID}, {"OperationId", &c.OperationID}} {
		g := event.CanonicalID(*f.id)
		if !isGUID(g) {
			return nil, fmt.Errorf("%w: %s is not a GUID", ErrNotContext, f.name)
		}
		*f.id = g
	}
	if w.OperationCreatedOn != "" {
		t, err := ParseDate(w.OperationCreatedOn)
		if err != nil {
			return nil, fmt.Errorf("%w: OperationCreatedOn: %v", ErrNotContext, err)
		}
		c.OperationCreatedOn = t
	}
	var err error
	if c.InputParameters, err = decodeKVs(w.InputParameters, 0); err != nil {
		return nil, fmt.Errorf("%w: InputParameters: %v", ErrNotContext, err)
	}
	if c.PreEntityImages, err = decodeImages(w.PreEntityImages); err != nil {
		return nil, fmt.Errorf("%w: PreEntityImages: %v", ErrNotContext, err)
	}
	if c.PostEntityImages, err = decodeImages(w.PostEntityImages); err != nil {
		return nil, fmt.Errorf("%w: PostEntityImages: %v", ErrNotContext, err)
	}
	return c, nil
}

// isGUID reports whether s is a GUID in canonical form (lower case, no
// braces), as event.CanonicalID writes one.
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
			continue
		}
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func sorted(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

func decodeImages(kvs []wireKV) (map[string]*Entity, error) {
	vals, err := decodeKVs(kvs, 0)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*Entity, len(vals))
	for k, v := range vals {
		if v.Kind != KindEntity {
			return nil, fmt.Errorf("image %q is not an entity", k)
		}
		out[k] = v.Entity
	}
	return out, nil
}

func decodeKVs(kvs []wireKV, depth int) (map[string]Value, error) {
	out := make(map[string]Value, len(kvs))
	for _, kv := range kvs {
		v, err := decodeValue(kv.Value, depth)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", kv.Key, err)
		}
		out[strings.ToLower(kv.Key)] = v
	}
	return out, nil
}

func decodeValue(raw json.RawMessage, depth int) (Value, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Value{Kind: KindNull}, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Value{}, err
		}
		return Value{Kind: KindString, Str: s}, nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return Value{}, err
		}
		return Value{Kind: KindBool, Bool: b}, nil
	case '[':
		return Value{Kind: KindOther}, nil
	case '{':
		if depth >= maxDepth {
			return Value{}, errors.New("nested too deep")
		}
		var e wireEntity
		if err := json.Unmarshal(raw, &e); err != nil {
			return Value{}, err
		}
		typ, _, _ := strings.Cut(e.Type, ":")
		switch {
		case typ == "EntityReference" || (typ == "" && e.ID != "" && e.LogicalName != "" && e.Attributes == nil):
			v := Value{Kind: KindReference, Str: e.ID, Logical: strings.ToLower(e.LogicalName)}
			if e.Name != nil {
				v.Name = *e.Name
			}
			return v, nil
		case typ == "Entity" || (typ == "" && e.Attributes != nil):
			attrs, err := decodeKVs(e.Attributes, depth+1)
			if err != nil {
				return Value{}, err
			}
			return Value{Kind: KindEntity, Entity: &Entity{LogicalName: strings.ToLower(e.LogicalName), ID: e.ID, Attributes: attrs}}, nil
		case e.Value != nil && (typ == "OptionSetValue" || typ == ""):
			return Value{Kind: KindOption, Num: *e.Value}, nil
		}
		return Value{Kind: KindOther}, nil
	default:
		var n float64
		if err := json.Unmarshal(raw, &n); err != nil {
			return Value{}, err
		}
		return Value{Kind: KindNumber, Num: n}, nil
	}
}

// ParseDate reads the WCF date Dataverse writes, "/Date(1506409448000)/"
// or "/Date(1506409448000-0700)/": milliseconds since the Unix epoch in
// UTC (the offset only says which zone the writer was in). RFC 3339 text is
// accepted too.
func ParseDate(s string) (time.Time, error) {
	inner, ok := strings.CutPrefix(s, "/Date(")
	if !ok {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("not a /Date(…)/ or RFC 3339 time")
		}
		return t.UTC(), nil
	}
	inner, ok = strings.CutSuffix(inner, ")/")
	if !ok {
		return time.Time{}, errors.New("unterminated /Date(")
	}
	digits := inner
	if i := strings.LastIndexAny(inner, "+-"); i > 0 {
		off := inner[i+1:]
		if len(off) != 4 || strings.Trim(off, "0123456789") != "" {
			return time.Time{}, errors.New("bad zone offset in /Date(…)/")
		}
		digits = inner[:i]
	}
	ms, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || ms < -62135596800000 || ms > 253402300799999 {
		return time.Time{}, errors.New("bad milliseconds in /Date(…)/")
	}
	return time.UnixMilli(ms).UTC(), nil
}
