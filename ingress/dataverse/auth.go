package dataverse

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/likeperson/portalsync/pkg/dvmap"
)

// DefaultKeyHeader is the header a key is looked for in when the service
// endpoint authenticates with HttpHeader.
const DefaultKeyHeader = "x-portalsync-key"

// QueryKeyParam is the query parameter of WebhookKey authentication
// (Dataverse appends ?code=<key>), also usable with HttpQueryString.
const QueryKeyParam = "code"

// MinKeyLength is the shortest key accepted: a key is the only thing that
// authenticates an unsigned Dataverse request.
const MinKeyLength = 24

// Keys authenticates Dataverse requests by a shared key. Several keys may
// be valid at once, for rotation.
type Keys struct {
	header  string
	digests [][sha256.Size]byte
}

// ErrNoKey and ErrWrongKey are returned by Check.
var (
	ErrNoKey    = errors.New("no key in the header or the code parameter")
	ErrWrongKey = errors.New("the key matches none configured")
)

// NewKeys checks the keys (at least one, each at least MinKeyLength
// bytes). header is where an HttpHeader key is sent; "" is
// DefaultKeyHeader.
func NewKeys(keys []string, header string) (*Keys, error) {
	if header == "" {
		header = DefaultKeyHeader
	}
	if strings.ContainsAny(header, " :\t\r\n") {
		return nil, fmt.Errorf("key header %q is not a header name", header)
	}
	k := &Keys{header: http.CanonicalHeaderKey(header)}
	for i, key := range keys {
		if len(key) < MinKeyLength {
			return nil, fmt.Errorf("dataverse key %d is shorter than %d characters", i+1, MinKeyLength)
		}
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	if len(k.digests) == 0 {
		return nil, errors.New("at least one dataverse key is required")
	}
	return k, nil
}

// Header is the header name keys are read from.
func (k *Keys) Header() string { return k.header }

// Check authenticates a request by its key header or code parameter. Keys
// are compared by their SHA-256 in constant time, each one, so neither the
// length nor which key matched shows in the timing.
func (k *Keys) Check(r *http.Request) error {
	given := r.Header.Get(k.header)
	if given == "" {
		given = r.URL.Query().Get(QueryKeyParam)
	}
	if given == "" {
		return ErrNoKey
	}
	d := sha256.Sum256([]byte(given))
	match := 0
	for _, want := range k.digests {
		match |= subtle.ConstantTimeCompare(d[:], want[:])
	}
	if match != 1 {
		return ErrWrongKey
	}
	return nil
}

// ParseKeys splits a list of keys separated by commas or new lines.
func ParseKeys(list string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// Config configures the Dataverse intake of the ingress.
type Config struct {
	// Keys are accepted in the key header or the code parameter; several
	// may be valid at once (rotation). Required, each at least
	// MinKeyLength characters.
	Keys []string
	// KeyHeader is the header an HttpHeader key is sent in. Default
	// DefaultKeyHeader.
	KeyHeader string
	// Organization is the x-ms-dynamics-organization the requests must
	// carry (the environment's host, e.g. "hlf.crm4.dynamics.com"),
	// compared without regard to case. Required.
	Organization string
	// Mapping says which tables and columns are members, organizations and
	// memberships. Default dvmap.DefaultMapping().
	Mapping *dvmap.Mapping
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	if _, err := NewKeys(c.Keys, c.KeyHeader); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(c.Organization) == "" {
		errs = append(errs, errors.New("the dataverse organization (DATAVERSE_ORGANIZATION) is required with dataverse keys"))
	}
	if c.Mapping != nil {
		if err := c.Mapping.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// OrganizationMatches reports whether the request's organization header is
// the configured environment's.
func (c Config) OrganizationMatches(r *http.Request) bool {
	return strings.EqualFold(strings.TrimSpace(r.Header.Get(HeaderOrganization)), strings.TrimSpace(c.Organization))
}
