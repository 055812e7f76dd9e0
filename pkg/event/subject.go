package event

import (
	"encoding/base64"
	"strings"
)

// SubjectPrefix starts every membership event subject; the full subject is
// SubjectPrefix + MemberKey(memberID).
const SubjectPrefix = "portal.member."

// SubjectWildcard matches every membership event subject.
const SubjectWildcard = SubjectPrefix + ">"

// encodedMarker starts a key that holds an encoded ID. It is outside the
// plain key alphabet, so plain and encoded keys never collide.
const encodedMarker = "~"

// MemberKey returns the NATS subject token for a member ID. An ID made only of
// letters, digits, '-' and '_' is its own key; any other ID (one holding '.',
// '*', '>', white space, or anything else) is encoded as "~" followed by its
// unpadded base64url form, so no ID can add subject tokens or wildcards, and
// distinct IDs always get distinct keys.
func MemberKey(memberID string) string {
	if memberID != "" && isPlainKey(memberID) {
		return memberID
	}
	return encodedMarker + base64.RawURLEncoding.EncodeToString([]byte(memberID))
}

// MemberIDFromKey reverses MemberKey.
func MemberIDFromKey(key string) (string, bool) {
	if enc, ok := strings.CutPrefix(key, encodedMarker); ok {
		b, err := base64.RawURLEncoding.DecodeString(enc)
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	if key == "" || !isPlainKey(key) {
		return "", false
	}
	return key, true
}

// Subject returns the subject an event of memberID is published on.
func Subject(memberID string) string { return SubjectPrefix + MemberKey(memberID) }

func isPlainKey(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
