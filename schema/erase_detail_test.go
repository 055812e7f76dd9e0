package schema_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

// 00030 cleans the log rows erased before it: the ID of the erased member
// leaves the detail of their refused changes (its hash replaces it), and
// other IDs in a detail stay.
func TestEraseLogDetailMigrationCleansErasedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, p := stepwise(t)
	_, err := p.UpTo(ctx, 29)
	require.NoError(t, err)

	const member, other = "a1b2c3d4-0000-4000-8000-00000000c001", "a1b2c3d4-0000-4000-8000-00000000c002"
	sum := sha256.Sum256([]byte(member))
	hash := "erased:" + hex.EncodeToString(sum[:])
	detail := func(id string) string {
		return "the ingress refused Dataverse update of contact " + id + ": invalid-event; left to reconciliation"
	}
	_, err = db.ExecContext(ctx, `INSERT INTO public.portal_sync_log (event_id, event_type, portal_member_id, status, detail)
		VALUES ('r1', 'change-refused', $1, 'failed', $2), ('r2', 'change-refused', $3, 'failed', $4)`,
		hash, detail(member), other, detail(other))
	require.NoError(t, err)

	_, err = p.UpTo(ctx, 30)
	require.NoError(t, err)
	for id, want := range map[string]string{"r1": detail(hash), "r2": detail(other)} {
		var got string
		require.NoError(t, db.QueryRowContext(ctx, `SELECT detail FROM public.portal_sync_log WHERE event_id = $1`, id).Scan(&got))
		require.Equal(t, want, got, id)
	}
}
