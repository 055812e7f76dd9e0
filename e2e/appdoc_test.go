package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/testkit/readmetest"
)

// docRequest is a supabase-js or supabase-dart query, reduced to what
// PostgREST receives.
type docRequest struct {
	RPC     string         // function called with rpc, or ""
	Params  map[string]any // its arguments
	Table   string         // view or table read with from
	Select  string
	Filters []docFilter
	Order   []docOrder
	From    int
	To      int // -1: no range
}

type docFilter struct {
	Column, Op string
	Value      any
}

type docOrder struct {
	Column    string
	Ascending bool
}

// docVar is a variable of the document's code (orgId, last.id, …).
type docVar string

// docCall is one call of a builder chain: name(args).
type docCall struct {
	name string
	args []string
}

// chain splits `supabase.from('x').select('*')…` into its calls.
func chain(t *testing.T, code string) []docCall {
	t.Helper()
	i := strings.Index(code, "supabase.")
	require.GreaterOrEqual(t, i, 0, "no supabase call in %q", code)
	s := code[i+len("supabase"):]
	var calls []docCall
	for {
		s = strings.TrimLeft(s, " \t\n")
		if !strings.HasPrefix(s, ".") {
			break
		}
		s = s[1:]
		open := strings.IndexByte(s, '(')
		require.Positive(t, open, "call in %q", s)
		name := strings.TrimSpace(s[:open])
		end := -1
		scanTop(s[open:], func(j, depth int) bool {
			if depth == 0 { // the bracket that closes s[open]
				end = open + j
			}
			return end < 0
		})
		require.Positive(t, end, "unbalanced call in %q", s)
		calls = append(calls, docCall{name: name, args: splitTop(s[open+1 : end])})
		s = s[end+1:]
	}
	return calls
}

// splitTop splits at commas outside brackets and strings.
func splitTop(s string) []string {
	var out []string
	start := 0
	scanTop(s, func(j, depth int) bool {
		if s[j] == ',' && depth == 0 {
			out = append(out, strings.TrimSpace(s[start:j]))
			start = j + 1
		}
		return true
	})
	if rest := strings.TrimSpace(s[start:]); rest != "" {
		out = append(out, rest)
	}
	return out
}

// scanTop calls visit with the index of each byte of s outside quoted
// strings (quotes excluded) and the bracket depth after that byte, until
// visit returns false.
func scanTop(s string, visit func(j, depth int) bool) {
	depth := 0
	var quote byte
	for j := 0; j < len(s); j++ {
		c := s[j]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
			continue
		case c == '\'' || c == '"' || c == '`':
			quote = c
			continue
		case c == '(' || c == '{' || c == '[':
			depth++
		case c == ')' || c == '}' || c == ']':
			depth--
		}
		if !visit(j, depth) {
			return
		}
	}
}

var (
	dartIndex = regexp.MustCompile(`^([A-Za-z_]\w*)\['(\w+)'\]$`)
	jsPath    = regexp.MustCompile(`^[A-Za-z_]\w*(\.\w+)*$`)
)

// value reads a literal or a variable.
func value(t *testing.T, s string) any {
	t.Helper()
	s = strings.TrimSpace(s)
	switch {
	case len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0]:
		return s[1 : len(s)-1]
	case s == "true" || s == "false":
		return s == "true"
	case strings.HasPrefix(s, "{"):
		return object(t, s)
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	if m := dartIndex.FindStringSubmatch(s); m != nil {
		return docVar(m[1] + "." + m[2])
	}
	require.Regexp(t, jsPath, s, "a value the test cannot read")
	return docVar(s)
}

// object reads { k: v, … } (js) or {'k': v, …} (dart).
func object(t *testing.T, s string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, kv := range splitTop(strings.TrimSpace(s[1 : len(s)-1])) {
		k, v, ok := strings.Cut(kv, ":")
		require.True(t, ok, "key: value in %q", kv)
		out[strings.Trim(strings.TrimSpace(k), `'"`)] = value(t, v)
	}
	return out
}

// named splits a dart named argument `name: value`.
func named(arg string) (string, string, bool) {
	k, v, ok := strings.Cut(arg, ":")
	if !ok || strings.ContainsAny(k, "'\"{") {
		return "", "", false
	}
	return strings.TrimSpace(k), strings.TrimSpace(v), true
}

// parseDocQuery reduces a block of either language to a docRequest.
func parseDocQuery(t *testing.T, lang, code string) docRequest {
	t.Helper()
	r := docRequest{To: -1}
	for _, c := range chain(t, code) {
		switch c.name {
		case "rpc":
			r.RPC = value(t, c.args[0]).(string)
			r.Params = map[string]any{}
			if len(c.args) > 1 {
				arg := c.args[1]
				if k, v, ok := named(arg); ok && lang == "dart" {
					require.Equal(t, "params", k)
					arg = v
				}
				r.Params = object(t, arg)
			}
		case "from":
			r.Table = value(t, c.args[0]).(string)
		case "select":
			r.Select = "*"
			if len(c.args) > 0 {
				r.Select = value(t, c.args[0]).(string)
			}
		case "eq", "neq", "gt", "gte", "lt", "lte":
			r.Filters = append(r.Filters, docFilter{Column: value(t, c.args[0]).(string), Op: c.name, Value: value(t, c.args[1])})
		case "order":
			// supabase-dart orders descending unless told otherwise,
			// supabase-js ascending.
			o := docOrder{Column: value(t, c.args[0]).(string), Ascending: lang == "js"}
			if len(c.args) > 1 {
				if k, v, ok := named(c.args[1]); ok && lang == "dart" {
					require.Equal(t, "ascending", k)
					o.Ascending = value(t, v).(bool)
				} else {
					o.Ascending = object(t, c.args[1])["ascending"].(bool)
				}
			}
			r.Order = append(r.Order, o)
		case "range":
			r.From, r.To = value(t, c.args[0]).(int), value(t, c.args[1]).(int)
		case "single", "maybeSingle":
		default:
			t.Fatalf("a call the test does not know: %s", c.name)
		}
	}
	return r
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// sql is the statement PostgREST runs for r, with vars bound.
func (r docRequest) sql(t *testing.T, vars map[docVar]any) (string, []any) {
	t.Helper()
	var args []any
	bind := func(v any) string {
		if name, ok := v.(docVar); ok {
			bound, ok := vars[name]
			require.True(t, ok, "the test binds no %s", name)
			v = bound
		}
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if r.RPC != "" {
		require.Regexp(t, ident, r.RPC)
		keys := make([]string, 0, len(r.Params))
		for k := range r.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var named []string
		for _, k := range keys {
			require.Regexp(t, ident, k)
			named = append(named, fmt.Sprintf("%q := %s", k, bind(r.Params[k])))
		}
		return fmt.Sprintf("SELECT * FROM public.%q(%s)", r.RPC, strings.Join(named, ", ")), args
	}
	require.Regexp(t, ident, r.Table)
	cols := "*"
	if r.Select != "*" {
		var q []string
		for _, c := range strings.Split(r.Select, ",") {
			c = strings.TrimSpace(c)
			require.Regexp(t, ident, c)
			q = append(q, strconv.Quote(c))
		}
		cols = strings.Join(q, ", ")
	}
	sql := fmt.Sprintf("SELECT %s FROM public.%q", cols, r.Table)
	ops := map[string]string{"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
	for i, f := range r.Filters {
		require.Regexp(t, ident, f.Column)
		kw := " AND "
		if i == 0 {
			kw = " WHERE "
		}
		sql += fmt.Sprintf("%s%q %s %s", kw, f.Column, ops[f.Op], bind(f.Value))
	}
	for i, o := range r.Order {
		require.Regexp(t, ident, o.Column)
		kw := ", "
		if i == 0 {
			kw = " ORDER BY "
		}
		dir := "DESC"
		if o.Ascending {
			dir = "ASC"
		}
		sql += fmt.Sprintf("%s%q %s", kw, o.Column, dir)
	}
	if r.To >= 0 {
		sql += fmt.Sprintf(" LIMIT %d OFFSET %d", r.To-r.From+1, r.From)
	}
	return sql, args
}

// docQueries reads docs/APP.md's queries: name → language → request.
func docQueries(t *testing.T) map[string]docRequest {
	t.Helper()
	byName := map[string]map[string]docRequest{}
	for _, b := range readmetest.FencedBlocks(t, filepath.Join("..", "docs", "APP.md")) {
		name, ok := strings.CutPrefix(b.Info, "query:")
		if !ok {
			continue
		}
		require.Contains(t, []string{"js", "dart"}, b.Lang, name)
		if byName[name] == nil {
			byName[name] = map[string]docRequest{}
		}
		byName[name][b.Lang] = parseDocQuery(t, b.Lang, b.Code)
	}
	out := map[string]docRequest{}
	for name, langs := range byName {
		require.Contains(t, langs, "js", "%s has no supabase-js version", name)
		require.Contains(t, langs, "dart", "%s has no supabase-dart version", name)
		require.True(t, reflect.DeepEqual(langs["js"], langs["dart"]), "%s: supabase-js and supabase-dart ask for different things:\n%#v\n%#v", name, langs["js"], langs["dart"])
		out[name] = langs["js"]
	}
	return out
}

// Every query of docs/APP.md, in supabase-js and supabase-dart (which must
// ask for the same thing), runs as PostgREST runs it: logged in as
// authenticator, SET LOCAL ROLE authenticated, the claims of an access
// token issued by Supabase Auth in request.jwt.claims, one transaction.
// The org admin of A gets rows from each; the org admin of B, naming A,
// gets none; a peer mentor of A gets only their own membership.
func TestAppDocQueries(t *testing.T) {
	queries := docQueries(t)
	require.GreaterOrEqual(t, len(queries), 8)
	s := startSupabase(t)
	ctx := context.Background()
	adminA := person{"ad-admin-a", "Aud", "Adminsen"}
	adminB := person{"ad-admin-b", "Bent", "Bsjef"}
	mentor := person{"ad-mentor", "Kari", "Nordmann"}
	gone := person{"ad-gone", "Geir", "Gåttut"}
	s.join(t, adminA, "org-a", "org_admin", base)
	s.join(t, adminB, "org-b", "org_admin", base)
	s.join(t, mentor, "org-a", "peer_mentor", base)
	s.join(t, gone, "org-a", "peer_mentor", base)
	e := s.event("membership-deactivated", gone.member, "org-a", "", base.Add(time.Minute))
	s.send(t, e)
	require.Equal(t, "success", s.waitLogged(t, e.ID))
	tokens := s.accessTokens(t, adminA, adminB, mentor)
	vars := map[docVar]any{"orgId": orgIDOn(t, s, "org-a")}
	s.asToken(t, tokens[adminA.member], func(tx pgx.Tx) {
		var at time.Time
		var id int64
		require.NoError(t, tx.QueryRow(ctx, `SELECT processed_at, id FROM public.sync_log(page_size => 1)`).Scan(&at, &id))
		vars["last.processed_at"], vars["last.id"], vars["entryId"] = at.Format(time.RFC3339Nano), id+1, id
	})

	run := func(who string, name string, q docRequest) int {
		sql, args := q.sql(t, vars)
		n := 0
		s.asToken(t, tokens[who], func(tx pgx.Tx) {
			rows, err := tx.Query(ctx, sql, args...)
			require.NoError(t, err, "%s: %s", name, sql)
			for rows.Next() {
				n++
				vals, err := rows.Values()
				require.NoError(t, err)
				_, err = json.Marshal(vals)
				require.NoError(t, err)
			}
			require.NoError(t, rows.Err(), "%s: %s", name, sql)
		})
		return n
	}
	for name, q := range queries {
		require.Positive(t, run(adminA.member, name, q), "%s: the org admin of A reads rows", name)
		require.Zero(t, run(adminB.member, name, q), "%s: the org admin of B, naming A, reads nothing", name)
		mine := run(mentor.member, name, q)
		if q.Table == "organization_members" && len(q.Filters) == 1 {
			require.Equal(t, 1, mine, "%s: a peer mentor reads their own membership", name)
		} else {
			require.Zero(t, mine, "%s: a peer mentor", name)
		}
	}
	// The search finds the member searched for, by name.
	sql, args := queries["log-search"].sql(t, vars)
	s.asToken(t, tokens[adminA.member], func(tx pgx.Tx) {
		require.Equal(t, []string{mentor.name()}, queryStrings(t, tx, "SELECT DISTINCT member_name FROM ("+sql+") q", args...))
	})
	sql, args = queries["members-inactive"].sql(t, vars)
	s.asToken(t, tokens[adminA.member], func(tx pgx.Tx) {
		require.Equal(t, []string{gone.name()}, queryStrings(t, tx, "SELECT display_name FROM ("+sql+") q", args...))
	})
}
