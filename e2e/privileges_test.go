package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/schematest"
	"github.com/likeperson/portalsync/testkit/supabasetest"
)

// apiPrivilegesSQL lists every privilege that anon, authenticated or
// PUBLIC (which both inherit) hold on the project's objects: the schema
// portalsync, and every table, sequence, view, column and function in
// public and portalsync that no extension owns. A NULL ACL is read as the
// built-in default (which gives PUBLIC EXECUTE on functions).
const apiPrivilegesSQL = `
WITH objs AS (
  SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' ELSE 'table ' END || n.nspname || '.' || c.relname AS name,
         c.relacl AS acl, c.relowner AS owner, CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char" AS kind
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('public', 'portalsync') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 'column ' || n.nspname || '.' || c.relname || '.' || a.attname, a.attacl, c.relowner, 'c'::"char"
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname IN ('public', 'portalsync') AND a.attacl IS NOT NULL AND NOT a.attisdropped
  UNION ALL
  SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
         p.proacl, p.proowner, 'f'::"char"
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname IN ('public', 'portalsync')
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
  UNION ALL
  SELECT 'schema ' || n.nspname, n.nspacl, n.nspowner, 'n'::"char" FROM pg_namespace n WHERE n.nspname = 'portalsync')
SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END || ' | ' || o.name || ' | ' || a.privilege_type
FROM objs o, aclexplode(coalesce(o.acl, CASE WHEN o.kind = 'c' THEN NULL ELSE acldefault(o.kind, o.owner) END)) a
WHERE a.grantee = 0 OR pg_get_userbyid(a.grantee) IN ('anon', 'authenticated')
ORDER BY 1`

// documentedAPIPrivileges reads the list between the api-privileges
// markers of docs/ACCESS.md.
func documentedAPIPrivileges(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "ACCESS.md"))
	require.NoError(t, err)
	doc := string(b)
	start := strings.Index(doc, "<!-- api-privileges:start -->")
	end := strings.Index(doc, "<!-- api-privileges:end -->")
	require.True(t, start >= 0 && end > start, "api-privileges markers in ACCESS.md")
	var out []string
	for _, line := range strings.Split(doc[start:end], "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 3 || strings.HasPrefix(strings.TrimSpace(cells[0]), "---") || strings.TrimSpace(cells[0]) == "role" {
			continue
		}
		for i := range cells {
			cells[i] = strings.Trim(strings.TrimSpace(cells[i]), "`")
		}
		for _, p := range strings.Split(cells[2], ",") {
			out = append(out, cells[0]+" | "+cells[1]+" | "+strings.TrimSpace(p))
		}
	}
	return out
}

func apiPrivileges(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	return queryStrings(t, pool, apiPrivilegesSQL)
}

// Every privilege anon and authenticated hold on the project's objects is
// the one docs/ACCESS.md lists — on a Supabase database, whose default
// privileges hand them everything postgres creates in public, and on plain
// PostgreSQL.
func TestAPIRolePrivilegesMatchDocs(t *testing.T) {
	want := documentedAPIPrivileges(t)
	require.NotEmpty(t, want)
	t.Run("Supabase", func(t *testing.T) {
		t.Parallel()
		db := supabasetest.Get(t).NewDatabase(t, supabasetest.Project)
		pool, err := pgxpool.New(context.Background(), db.URL("supabase_admin"))
		require.NoError(t, err)
		defer pool.Close()
		require.Equal(t, want, apiPrivileges(t, pool))
	})
	t.Run("PlainPostgreSQL", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, want, apiPrivileges(t, schematest.NewDB(t).Pool))
	})
}
