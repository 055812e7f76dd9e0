package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"
)

// ErrDeltaRefused means Dataverse refused a delta link (an expired version
// stamp is a 4xx): the table must be read in full again.
var ErrDeltaRefused = errors.New("delta link refused")

// page is one response of a collection read.
type page struct {
	Value     []map[string]any `json:"value"`
	NextLink  string           `json:"@odata.nextLink"`
	DeltaLink string           `json:"@odata.deltaLink"`
}

// webAPI reads collections; its HTTP client adds the bearer token.
type webAPI struct {
	cfg     Config
	http    *http.Client
	log     *zap.Logger
	metrics *Metrics
}

// read follows a link and every @odata.nextLink after it, handing each
// page's rows to fn, and returns the final @odata.deltaLink.
func (w *webAPI) read(ctx context.Context, link string, delta bool, fn func(rows []map[string]any) error) (string, error) {
	for {
		p, err := w.get(ctx, link, delta)
		if err != nil {
			return "", err
		}
		if err := fn(p.Value); err != nil {
			return "", err
		}
		if p.NextLink == "" {
			return p.DeltaLink, nil
		}
		link = p.NextLink
	}
}

// get asks for one page, waiting out 429s as Retry-After says (service
// protection limits) and retrying a 5xx or a broken connection a few
// times.
func (w *webAPI) get(ctx context.Context, link string, delta bool) (*page, error) {
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		p, retry, err := w.try(ctx, link, delta)
		if err == nil || retry < 0 {
			return p, err
		}
		if retry == 0 {
			if attempt >= 4 {
				return nil, err
			}
			retry, backoff = backoff, backoff*2
		} else {
			if retry > w.cfg.MaxThrottleWait {
				return nil, fmt.Errorf("%w (Retry-After %s is beyond the limit %s)", err, retry, w.cfg.MaxThrottleWait)
			}
			w.metrics.throttleWaits.Inc()
			w.metrics.throttleSeconds.Add(retry.Seconds())
			w.log.Info("throttled by Dataverse; waiting", zap.Duration("retry_after", retry))
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// try makes one request. retry < 0: final error; 0: retry with backoff;
// > 0: retry after that long (429).
func (w *webAPI) try(ctx context.Context, link string, delta bool) (*page, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return nil, -1, fmt.Errorf("request %s: %w", redact(link), err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("OData-MaxVersion", "4.0")
	req.Header.Set("OData-Version", "4.0")
	// The lookups' tables (rows.go): Dataverse annotates a lookup with the
	// table it names only when asked.
	req.Header.Set("Prefer", fmt.Sprintf(`odata.track-changes, odata.maxpagesize=%d, odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"`, w.cfg.PageSize))
	resp, err := w.http.Do(req)
	if err != nil {
		var token *oauth2.RetrieveError
		if errors.As(err, &token) && token.Response != nil && token.Response.StatusCode < 500 {
			// Entra ID refused the credentials: no retry fixes that.
			return nil, -1, fmt.Errorf("token: %w", err)
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil, -1, err
		}
		return nil, 0, fmt.Errorf("get %s: %w", redact(link), err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		var p page
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", redact(link), err)
		}
		return &p, 0, nil
	case resp.StatusCode == http.StatusTooManyRequests:
		return nil, retryAfter(resp.Header.Get("Retry-After"), w.cfg.Now()), fmt.Errorf("get %s: 429 too many requests", redact(link))
	case resp.StatusCode >= 500:
		return nil, 0, fmt.Errorf("get %s: %s", redact(link), resp.Status)
	}
	msg := apiMessage(resp.Body)
	if delta && resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		return nil, -1, fmt.Errorf("%w: %s: %s", ErrDeltaRefused, resp.Status, msg)
	}
	return nil, -1, fmt.Errorf("get %s: %s: %s", redact(link), resp.Status, msg)
}

// retryAfter reads Retry-After as seconds or an HTTP date; at least 1 s.
func retryAfter(v string, now time.Time) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		return max(time.Duration(s)*time.Second, time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), time.Second)
	}
	return time.Second
}

func apiMessage(r io.Reader) string {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(r, 4096))
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return e.Error.Code + " " + e.Error.Message
	}
	return strings.TrimSpace(string(b))
}

// redact drops a link's query (delta and skip tokens) from messages.
func redact(link string) string {
	base, _, _ := strings.Cut(link, "?")
	return base
}
