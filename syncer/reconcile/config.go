// Package reconcile reads the portal (Dataverse) through its Web API and
// publishes what the app may have missed as events into the event stream:
// a full read first, then the changes since the last read (change
// tracking, delta links kept in a NATS KV bucket), deleted rows as
// erasure or deactivation, and after every full read of the memberships a
// correction for each membership the app holds active that the portal no
// longer does. The syncer applies those events like any webhook's; its
// newest-wins rule makes a change already delivered by webhook a no-op.
package reconcile

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/stream"
)

// Defaults for Config.
const (
	DefaultPageSize        = 5000
	DefaultInterval        = 15 * time.Minute
	DefaultBucket          = "PORTALSYNC_RECONCILE"
	DefaultMaxThrottleWait = 5 * time.Minute
	DefaultRequestTimeout  = 2 * time.Minute
	DefaultPublishWindow   = 512
)

// APIPath is the Dataverse Web API root under the environment URL.
const APIPath = "/api/data/v9.2/"

// Config configures the reconciler. URL, TokenURL, ClientID and
// ClientSecret are required.
type Config struct {
	// URL is the Dataverse environment, e.g. https://hlf.crm4.dynamics.com.
	URL string
	// TokenURL is Microsoft Entra ID's token endpoint,
	// https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token.
	TokenURL string
	// ClientID and ClientSecret are the application user's credentials
	// (OAuth 2.0 client credentials).
	ClientID     string
	ClientSecret string
	// Scope is the token's scope. Default URL + "/.default".
	Scope string
	// PageSize is asked for with Prefer: odata.maxpagesize. Default 5000
	// (Dataverse's largest).
	PageSize int
	// Interval is the wait between passes of Run. Default 15 minutes.
	Interval time.Duration
	// MaxThrottleWait bounds one Retry-After wait after a 429; a longer
	// one fails the pass. Default 5 minutes.
	MaxThrottleWait time.Duration
	// RequestTimeout bounds one Web API request. Default 2 minutes.
	RequestTimeout time.Duration
	// PublishWindow is how many publishes await their acknowledgement at
	// once. Default 512.
	PublishWindow int
	// Mapping names the tables and columns. Default dvmap.DefaultMapping().
	Mapping *dvmap.Mapping
	// Stream is the event stream. Bucket is the KV bucket the delta links
	// are kept in (default PORTALSYNC_RECONCILE).
	Stream stream.Config
	Bucket string
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.URL = strings.TrimRight(c.URL, "/")
	c.Scope = cmp.Or(c.Scope, c.URL+"/.default")
	c.PageSize = cmp.Or(c.PageSize, DefaultPageSize)
	c.Interval = cmp.Or(c.Interval, DefaultInterval)
	c.MaxThrottleWait = cmp.Or(c.MaxThrottleWait, DefaultMaxThrottleWait)
	c.RequestTimeout = cmp.Or(c.RequestTimeout, DefaultRequestTimeout)
	c.PublishWindow = cmp.Or(c.PublishWindow, DefaultPublishWindow)
	c.Bucket = cmp.Or(c.Bucket, DefaultBucket)
	if c.Mapping == nil {
		m := dvmap.DefaultMapping()
		c.Mapping = &m
	}
	c.Stream = c.Stream.WithDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports what is wrong with a configuration (after WithDefaults).
func (c Config) Validate() error {
	var errs []error
	for name, v := range map[string]string{"URL (DATAVERSE_URL)": c.URL, "token URL (DATAVERSE_TOKEN_URL)": c.TokenURL} {
		u, err := url.Parse(v)
		if v == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("%s must be an http(s) URL", name))
		}
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		errs = append(errs, errors.New("client id and secret (DATAVERSE_CLIENT_ID, DATAVERSE_CLIENT_SECRET) are required"))
	}
	if c.PageSize < 1 || c.PageSize > 5000 {
		errs = append(errs, errors.New("page size must be 1..5000"))
	}
	if c.Interval < 0 || c.MaxThrottleWait < 0 || c.RequestTimeout < 0 || c.PublishWindow < 1 {
		errs = append(errs, errors.New("durations must not be negative, the publish window positive"))
	}
	if err := c.Mapping.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Stream.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
