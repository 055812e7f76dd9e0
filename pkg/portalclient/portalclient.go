// Package portalclient posts signed membership events the way the portal
// does. The send command, the tests and the load generator use it.
package portalclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/likeperson/portalsync/pkg/signature"
)

// Client posts signed webhooks to one URL.
type Client struct {
	// URL is the webhook endpoint, e.g. http://localhost:8080/webhooks/portal.
	URL string
	// Signer signs each request.
	Signer *signature.Signer
	// HTTP sends the requests. Default http.DefaultClient.
	HTTP *http.Client
	// Now returns the signing time. Default time.Now.
	Now func() time.Time
}

// Response is the ingress's answer.
type Response struct {
	Status int
	// Header holds the response headers (Retry-After on a 503).
	Header http.Header
	// Body is the raw response body: the accepted JSON or a problem.
	Body []byte
}

// Accepted decodes a 2xx body.
type Accepted struct {
	EventID   string `json:"event_id"`
	StreamSeq uint64 `json:"stream_seq"`
	Duplicate bool   `json:"duplicate"`
}

// Accepted decodes the body of a 2xx answer.
func (r *Response) Accepted() (Accepted, error) {
	var a Accepted
	if r.Status/100 != 2 {
		return a, fmt.Errorf("status %d: %s", r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, &a); err != nil {
		return a, fmt.Errorf("decode accepted body: %w", err)
	}
	return a, nil
}

// Send posts body as the webhook with the given id, signed now.
func (c *Client) Send(ctx context.Context, webhookID string, body []byte) (*Response, error) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	c.Signer.SetHeaders(req.Header, webhookID, now(), body)
	return c.Do(req)
}

// Do sends a prepared request and reads the whole answer.
func (c *Client) Do(req *http.Request) (*Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

// SendEvent marshals ev, reads its "id" and posts it with that webhook-id.
func (c *Client) SendEvent(ctx context.Context, ev any) (*Response, error) {
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("marshal event: %w", err)
	}
	var head struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &head); err != nil || head.ID == "" {
		return nil, fmt.Errorf("event has no id")
	}
	return c.Send(ctx, head.ID, body)
}
