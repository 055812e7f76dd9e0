// Package signature signs and verifies webhooks as Standard Webhooks v1
// specifies: HMAC-SHA256 over "id.timestamp.body" with a whsec_ secret, sent in
// the webhook-id, webhook-timestamp and webhook-signature headers.
//
// It is written to the specification rather than wrapping the reference Go
// library, because the portal sync needs what that library lacks: several
// secrets at once for rotation, a configurable timestamp tolerance, and
// failure reasons fine enough to count in metrics.
package signature

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every secret in its text form.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a webhook-timestamp may be from the receiver's
// clock, either way, as the specification recommends.
const DefaultTolerance = 5 * time.Minute

// Key sizes the specification allows for symmetric secrets.
const (
	minKeyBytes = 24
	maxKeyBytes = 64
)

// maxIDLength bounds the webhook-id header; the portal's IDs are far shorter.
const maxIDLength = 256

// maxSignatures bounds how many signatures one header may carry, so a hostile
// header cannot make the receiver compute without end.
const maxSignatures = 16

// Reason classifies a verification failure, for responses and metrics.
type Reason string

// The reasons a webhook fails verification.
const (
	ReasonMissingHeader      Reason = "missing_header"
	ReasonMalformedID        Reason = "malformed_id"
	ReasonMalformedTimestamp Reason = "malformed_timestamp"
	ReasonTimestampTooOld    Reason = "timestamp_too_old"
	ReasonTimestampTooNew    Reason = "timestamp_too_new"
	ReasonMalformedSignature Reason = "malformed_signature"
	ReasonNoMatch            Reason = "no_matching_signature"
)

// Error is returned by Verify; Reason classifies it.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string { return "webhook signature: " + e.Detail }

func fail(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the Reason of a verification error, or "" for nil or
// another error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// Secret is one signing key. Its String form never shows the key.
type Secret struct {
	key []byte
}

// ParseSecret parses a secret in the form "whsec_<base64>". The prefix may be
// left out. The decoded key must hold 24 to 64 bytes.
func ParseSecret(s string) (Secret, error) {
	s = strings.TrimSpace(s)
	enc := strings.TrimPrefix(s, SecretPrefix)
	if enc == "" {
		return Secret{}, errors.New("parse secret: empty")
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return Secret{}, errors.New("parse secret: not base64 after whsec_")
	}
	if len(key) < minKeyBytes || len(key) > maxKeyBytes {
		return Secret{}, fmt.Errorf("parse secret: key is %d bytes, want %d to %d", len(key), minKeyBytes, maxKeyBytes)
	}
	return Secret{key: key}, nil
}

// ParseSecrets parses a comma-separated list of secrets, skipping empty
// entries. It fails when the list holds none.
func ParseSecrets(list string) ([]Secret, error) {
	var out []Secret
	for i, part := range strings.Split(list, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		s, err := ParseSecret(part)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no webhook secret given")
	}
	return out, nil
}

// String hides the key.
func (s Secret) String() string { return SecretPrefix + "…" }

// Text returns the secret in its "whsec_<base64>" form, for writing it to
// configuration. Never log it.
func (s Secret) Text() string { return SecretPrefix + base64.StdEncoding.EncodeToString(s.key) }

// NewSecret wraps raw key bytes, for tests and key generation.
func NewSecret(key []byte) (Secret, error) {
	if len(key) < minKeyBytes || len(key) > maxKeyBytes {
		return Secret{}, fmt.Errorf("new secret: key is %d bytes, want %d to %d", len(key), minKeyBytes, maxKeyBytes)
	}
	return Secret{key: append([]byte(nil), key...)}, nil
}

func (s Secret) mac(id string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Sign returns the "v1,<base64>" signature of a message.
func (s Secret) Sign(id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(s.mac(id, ts.Unix(), body))
}

// Signer signs outgoing webhooks with one or more secrets (all of them, so a
// receiver in the middle of a rotation accepts either).
type Signer struct {
	secrets []Secret
}

// NewSigner returns a Signer that signs with every given secret.
func NewSigner(secrets ...Secret) *Signer { return &Signer{secrets: secrets} }

// SignatureHeader returns the webhook-signature value: one v1 signature per
// secret, separated by spaces.
func (s *Signer) SignatureHeader(id string, ts time.Time, body []byte) string {
	sigs := make([]string, len(s.secrets))
	for i, sec := range s.secrets {
		sigs[i] = sec.Sign(id, ts, body)
	}
	return strings.Join(sigs, " ")
}

// SetHeaders sets the three webhook headers on h.
func (s *Signer) SetHeaders(h http.Header, id string, ts time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, s.SignatureHeader(id, ts, body))
}

// Verifier checks incoming webhooks against a set of secrets.
type Verifier struct {
	secrets   []Secret
	tolerance time.Duration
	now       func() time.Time
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Secrets are all accepted; during a rotation both the old and the new
	// secret are listed. At least one is required.
	Secrets []Secret
	// Tolerance is how far the webhook-timestamp may be from now, either
	// way. Default DefaultTolerance.
	Tolerance time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if len(cfg.Secrets) == 0 {
		return nil, errors.New("new verifier: at least one secret is required")
	}
	if cfg.Tolerance < 0 {
		return nil, errors.New("new verifier: tolerance must not be negative")
	}
	v := &Verifier{secrets: cfg.Secrets, tolerance: cfg.Tolerance, now: cfg.Now}
	if v.tolerance == 0 {
		v.tolerance = DefaultTolerance
	}
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

// VerifyHeaders verifies body against the webhook headers in h.
func (v *Verifier) VerifyHeaders(h http.Header, body []byte) error {
	return v.Verify(h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature), body)
}

// Verify checks that one of the v1 signatures in sigHeader was made with one
// of the secrets over id, timestamp and body, and that the timestamp is
// within the tolerance. The comparison is constant-time. The returned error
// is an *Error.
func (v *Verifier) Verify(id, timestamp, sigHeader string, body []byte) error {
	switch {
	case id == "":
		return fail(ReasonMissingHeader, "missing %s header", HeaderID)
	case timestamp == "":
		return fail(ReasonMissingHeader, "missing %s header", HeaderTimestamp)
	case sigHeader == "":
		return fail(ReasonMissingHeader, "missing %s header", HeaderSignature)
	}
	if len(id) > maxIDLength || strings.ContainsAny(id, " \t\r\n") {
		return fail(ReasonMalformedID, "%s must be at most %d characters without white space", HeaderID, maxIDLength)
	}
	ts, err := ParseTimestamp(timestamp)
	if err != nil {
		return err
	}
	now := v.now()
	sent := time.Unix(ts, 0)
	if sent.Before(now.Add(-v.tolerance)) {
		return fail(ReasonTimestampTooOld, "%s is more than %s in the past", HeaderTimestamp, v.tolerance)
	}
	if sent.After(now.Add(v.tolerance)) {
		return fail(ReasonTimestampTooNew, "%s is more than %s in the future", HeaderTimestamp, v.tolerance)
	}
	sigs, err := ParseSignatureHeader(sigHeader)
	if err != nil {
		return err
	}
	for _, sec := range v.secrets {
		want := sec.mac(id, ts, body)
		for _, got := range sigs {
			if hmac.Equal(want, got) {
				return nil
			}
		}
	}
	return fail(ReasonNoMatch, "no signature matches a configured secret")
}

// ParseTimestamp parses a webhook-timestamp: whole seconds since the Unix
// epoch, in decimal.
func ParseTimestamp(s string) (int64, error) {
	if len(s) == 0 || len(s) > 12 {
		return 0, fail(ReasonMalformedTimestamp, "%s must be whole seconds since the Unix epoch", HeaderTimestamp)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fail(ReasonMalformedTimestamp, "%s must be whole seconds since the Unix epoch", HeaderTimestamp)
		}
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fail(ReasonMalformedTimestamp, "%s must be whole seconds since the Unix epoch", HeaderTimestamp)
	}
	return ts, nil
}

// ParseSignatureHeader returns the decoded v1 signatures of a
// webhook-signature header: a space-separated list of "version,base64"
// entries. Entries of other versions (such as v1a) are skipped, as the
// specification asks; a header with no well-formed v1 entry is an error.
func ParseSignatureHeader(h string) ([][]byte, error) {
	var sigs [][]byte
	entries := 0
	for _, entry := range strings.Split(h, " ") {
		if entry == "" {
			continue
		}
		entries++
		if entries > maxSignatures {
			return nil, fail(ReasonMalformedSignature, "%s holds more than %d signatures", HeaderSignature, maxSignatures)
		}
		version, enc, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(sig) != sha256.Size {
			continue
		}
		sigs = append(sigs, sig)
	}
	if len(sigs) == 0 {
		return nil, fail(ReasonMalformedSignature, "%s holds no well-formed v1 signature", HeaderSignature)
	}
	return sigs, nil
}
