package event_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/event"
)

// The published JSON Schema and the examples in docs/ must agree with the
// Go decoder that the ingress uses.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	f, err := os.Open(filepath.Join("..", "..", "docs", "event.schema.json"))
	require.NoError(t, err)
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	require.NoError(t, err)
	require.NoError(t, c.AddResource("event.schema.json", doc))
	s, err := c.Compile("event.schema.json")
	require.NoError(t, err)
	return s
}

func TestDocsExamplesAreValid(t *testing.T) {
	t.Parallel()
	s := compileSchema(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "examples", "*.json"))
	require.NoError(t, err)
	require.Len(t, files, len(event.AllTypes), "one example per event type")
	seen := map[event.Type]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		ev, err := event.Decode(b)
		require.NoError(t, err, f)
		require.Equal(t, strings.TrimSuffix(filepath.Base(f), ".json"), string(ev.Type))
		seen[ev.Type] = true
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
		require.NoError(t, err)
		require.NoError(t, s.Validate(inst), f)
	}
	require.Len(t, seen, len(event.AllTypes))
}

func TestSchemaAgreesWithDecoder(t *testing.T) {
	t.Parallel()
	s := compileSchema(t)
	bodies := []string{
		validCreated,
		`{"id":"e","type":"membership-merged","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"m"}}`,
		`{"id":"e","type":"role-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"}}`,
		`{"id":"e","type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"m"},"role":"peer_mentor"}`,
		`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"a b"}}`,
		`{"id":"e","type":"membership-updated","occurred_at":"not a time","organization":{"id":"o"},"member":{"id":"m"}}`,
		`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"},"role":"king"}`,
		`{"id":"","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"}}`,
		`{"type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m"}}`,
		`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","phone":"call me"}}`,
		`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o","name":null},"member":{"id":"m","email":null,"first_name":null,"last_name":null,"phone":null}}`,
		`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"{0B9F2C1E-1A2B-4C3D-8E9F-00000000000A}"},"member":{"id":"{0b9f2c1e-1a2b-4c3d-8e9f-00000000000a}"}}`,
		`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"{m}"}}`,
		`{"id":"e","type":"membership-updated","occurred_at":"2026-11-25T10:00:00Z","organization":{"id":"o"},"member":{"id":"m","phone":7}}`,
		`{"id":"e","type":"member-deleted","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"m"}}`,
		`{"id":"e","type":"member-deleted","occurred_at":"2026-11-25T10:00:00Z"}`,
	}
	for _, b := range bodies {
		_, decErr := event.Decode([]byte(b))
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(b))
		require.NoError(t, err)
		schemaErr := s.Validate(inst)
		require.Equal(t, decErr == nil, schemaErr == nil, "%s\ndecoder: %v\nschema: %v", b, decErr, schemaErr)
	}
}
