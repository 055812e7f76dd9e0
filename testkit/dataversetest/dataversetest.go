// Package dataversetest is a fake Dataverse Web API and Microsoft Entra ID
// token endpoint for tests: OAuth 2.0 client credentials, collections read
// with $select, server-driven paging (@odata.nextLink, Prefer
// odata.maxpagesize), change tracking (Prefer odata.track-changes,
// @odata.deltaLink, $deletedEntity rows), lookup annotations (Prefer
// odata.include-annotations), service-protection limits (429 with
// Retry-After) and expired delta tokens, as Microsoft documents them.
package dataversetest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// APIPath is the Web API root the fake serves.
const APIPath = "/api/data/v9.2/"

// Server is a running fake.
type Server struct {
	srv          *httptest.Server
	clientID     string
	clientSecret string

	mu       sync.Mutex
	version  int64
	tables   map[string]*table // by entity set
	throttle int
	retry    time.Duration
	expired  int64 // delta tokens below this are expired

	// Counters for tests.
	TokensIssued atomic.Int64
	Requests     atomic.Int64
	Throttled    atomic.Int64
}

type table struct {
	key     string
	rows    map[string]map[string]any
	deleted map[string]int64
	changed map[string]int64
}

// New starts a fake that accepts the given client credentials; it stops
// when the test ends.
func New(t testing.TB, clientID, clientSecret string) *Server {
	s := &Server{clientID: clientID, clientSecret: clientSecret, tables: map[string]*table{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("GET "+APIPath+"{set}", s.collection)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the environment URL (the Web API is under APIPath).
func (s *Server) URL() string { return s.srv.URL }

// TokenURL is the token endpoint.
func (s *Server) TokenURL() string { return s.srv.URL + "/token" }

// AddTable creates an empty entity set whose primary key column is key
// (Put creates it too); an entity set never added answers 404.
func (s *Server) AddTable(set, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table(set, key)
}

// Ref is the value of a lookup column (_<name>_value): the id of a row of
// Table (a logical name). The fake returns the id, and the table as the
// annotation <column>@Microsoft.Dynamics.CRM.lookuplogicalname (Name as
// <column>@OData.Community.Display.V1.FormattedValue) only when the
// request asks for the annotation with Prefer:
// odata.include-annotations="…" ("*", "Microsoft.Dynamics.CRM.*" or its
// name), as Dataverse does.
type Ref struct {
	Table, ID, Name string
}

// Put creates or replaces a row of the entity set (its primary key column
// named key) and stamps it with a new versionnumber.
func (s *Server) Put(set, key, id string, cols map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.table(set, key)
	s.version++
	row := map[string]any{}
	for k, v := range cols {
		row[k] = v
	}
	row[key] = id
	row["versionnumber"] = s.version
	tb.rows[id] = row
	tb.changed[id] = s.version
	delete(tb.deleted, id)
}

// Delete removes a row; change tracking reports it as $deletedEntity.
func (s *Server) Delete(set, key, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.table(set, key)
	s.version++
	delete(tb.rows, id)
	delete(tb.changed, id)
	tb.deleted[id] = s.version
}

// Throttle answers the next n data requests 429 with Retry-After.
func (s *Server) Throttle(n int, retryAfter time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttle, s.retry = n, retryAfter
}

// ExpireDeltaTokens makes every delta token issued so far expired: Dataverse
// answers 400 for it, and the client must read everything again.
func (s *Server) ExpireDeltaTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version++
	s.expired = s.version
}

func (s *Server) table(set, key string) *table {
	tb, ok := s.tables[set]
	if !ok {
		tb = &table{key: key, rows: map[string]map[string]any{}, deleted: map[string]int64{}, changed: map[string]int64{}}
		s.tables[set] = tb
	}
	return tb
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request")
		return
	}
	id, secret, ok := r.BasicAuth()
	if !ok {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		oauthError(w, "unsupported_grant_type")
		return
	}
	if id != s.clientID || secret != s.clientSecret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
		return
	}
	if !strings.HasSuffix(r.PostForm.Get("scope"), "/.default") {
		oauthError(w, "invalid_scope")
		return
	}
	n := s.TokensIssued.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": fmt.Sprintf("fake-token-%d", n), "token_type": "Bearer", "expires_in": 3599})
}

func oauthError(w http.ResponseWriter, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = fmt.Fprintf(w, `{"error":%q}`, code)
}

var (
	maxPageSize = regexp.MustCompile(`odata\.maxpagesize=(\d+)`)
	annotations = regexp.MustCompile(`odata\.include-annotations="([^"]*)"`)
)

// annotated reports whether the Prefer header asks for the annotation
// name: the list of odata.include-annotations holds "*", name, or its
// namespace followed by ".*".
func annotated(prefer, name string) bool {
	m := annotations.FindStringSubmatch(prefer)
	if m == nil {
		return false
	}
	for _, p := range strings.Split(m[1], ",") {
		p = strings.TrimSpace(p)
		if p == "*" || p == name || (strings.HasSuffix(p, ".*") && strings.HasPrefix(name, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}

// render writes a stored column into a response row, with a lookup's
// annotations where asked.
func render(out map[string]any, col string, v any, prefer string) {
	ref, ok := v.(Ref)
	if !ok {
		out[col] = v
		return
	}
	out[col] = ref.ID
	if annotated(prefer, "Microsoft.Dynamics.CRM.lookuplogicalname") {
		out[col+"@Microsoft.Dynamics.CRM.lookuplogicalname"] = ref.Table
	}
	if ref.Name != "" && annotated(prefer, "OData.Community.Display.V1.FormattedValue") {
		out[col+"@OData.Community.Display.V1.FormattedValue"] = ref.Name
	}
}

func (s *Server) collection(w http.ResponseWriter, r *http.Request) {
	s.Requests.Add(1)
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer fake-token-") {
		apiError(w, http.StatusUnauthorized, "0x80072560", "the user is not authenticated")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.throttle > 0 {
		s.throttle--
		s.Throttled.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(int(s.retry.Round(time.Second)/time.Second)))
		apiError(w, http.StatusTooManyRequests, "0x80072322", "Number of requests exceeded the limit of 6000 over time window of 300 seconds.")
		return
	}
	set := r.PathValue("set")
	tb, ok := s.tables[set]
	if !ok {
		apiError(w, http.StatusNotFound, "0x80060888", "Resource not found for the segment '"+set+"'.")
		return
	}
	q := r.URL.Query()
	prefer := r.Header.Get("Prefer")
	track := strings.Contains(prefer, "odata.track-changes")
	pageSize := 5000
	if m := maxPageSize.FindStringSubmatch(prefer); m != nil {
		pageSize, _ = strconv.Atoi(m[1])
	}
	var cols []string
	if sel := q.Get("$select"); sel != "" {
		cols = strings.Split(sel, ",")
	}

	since, snap, ok := s.window(q)
	if !ok {
		apiError(w, http.StatusBadRequest, "0x80044352", "Version stamp associated with the client has been expired. Please perform a full sync.")
		return
	}
	items := tb.changes(since, snap)
	offset, _ := strconv.Atoi(q.Get("$skiptoken"))
	end := min(offset+pageSize, len(items))
	if offset > len(items) {
		offset = len(items)
	}
	values := s.rows(set, tb, items[offset:end], cols, prefer)
	body := map[string]any{"@odata.context": s.srv.URL + APIPath + "$metadata#" + set, "value": values}
	link := func(extra url.Values) string {
		u := url.URL{Scheme: "http", Host: r.Host, Path: APIPath + set}
		v := url.Values{}
		if sel := q.Get("$select"); sel != "" {
			v.Set("$select", sel)
		}
		for k, vs := range extra {
			v[k] = vs
		}
		u.RawQuery = v.Encode()
		return u.String()
	}
	if end < len(items) {
		next := url.Values{"$skiptoken": {strconv.Itoa(end)}, "snap": {strconv.FormatInt(snap, 10)}}
		if since >= 0 {
			next.Set("$deltatoken", strconv.FormatInt(since, 10))
		}
		body["@odata.nextLink"] = link(next)
	} else if track || since >= 0 {
		body["@odata.deltaLink"] = link(url.Values{"$deltatoken": {strconv.FormatInt(snap, 10)}})
	}
	if track {
		w.Header().Set("Preference-Applied", "odata.track-changes")
	}
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	_ = json.NewEncoder(w).Encode(body)
}

// window is the versions a read covers: changes after since (-1 for a
// full read; a $deltatoken's version) up to the snapshot snap its pages
// share. A delta token older than the server keeps is not ok.
func (s *Server) window(q url.Values) (since, snap int64, ok bool) {
	since = -1
	if dt := q.Get("$deltatoken"); dt != "" {
		v, err := strconv.ParseInt(dt, 10, 64)
		if err != nil || v < s.expired {
			return 0, 0, false
		}
		since = v
	}
	snap = s.version
	if v := q.Get("snap"); v != "" {
		snap, _ = strconv.ParseInt(v, 10, 64)
	}
	return since, snap, true
}

// change is a row of a table read: changed, or (in a delta) deleted.
type change struct {
	id      string
	deleted bool
}

// changes lists the rows changed after version since up to snap, and for
// a delta (since >= 0) those deleted, by id.
func (tb *table) changes(since, snap int64) []change {
	var items []change
	for id, v := range tb.changed {
		if v > since && v <= snap {
			items = append(items, change{id: id})
		}
	}
	if since >= 0 {
		for id, v := range tb.deleted {
			if v > since && v <= snap {
				items = append(items, change{id: id, deleted: true})
			}
		}
	}
	slices.SortFunc(items, func(a, b change) int { return cmp.Compare(a.id, b.id) })
	return items
}

// rows renders items of entity set set as the Web API returns them: the
// selected columns (all without $select), a deleted row as a
// $deletedEntity.
func (s *Server) rows(set string, tb *table, items []change, cols []string, prefer string) []map[string]any {
	values := make([]map[string]any, 0, len(items))
	for _, it := range items {
		if it.deleted {
			values = append(values, map[string]any{"@odata.context": s.srv.URL + APIPath + "$metadata#" + set + "/$deletedEntity", "id": it.id, "reason": "deleted"})
			continue
		}
		row := tb.rows[it.id]
		out := map[string]any{"@odata.etag": fmt.Sprintf(`W/"%d"`, row["versionnumber"])}
		if cols == nil {
			for k, v := range row {
				render(out, k, v, prefer)
			}
		} else {
			out[tb.key] = row[tb.key]
			for _, c := range cols {
				render(out, c, row[c], prefer) // absent columns are null, as in Dataverse
			}
		}
		values = append(values, out)
	}
	return values
}

func apiError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}
