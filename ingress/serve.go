package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/likeperson/portalsync/ingress/dataverse"
	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/command"
	"github.com/likeperson/portalsync/pkg/dvmap"
	"github.com/likeperson/portalsync/pkg/logging"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
)

type serveCmd struct {
	Addr                  string        `env:"INGRESS_ADDR" default:":8080" help:"Webhook listen address (the webhook routes only)."`
	OpsAddr               string        `name:"ops-addr" env:"INGRESS_OPS_ADDR" default:"127.0.0.1:9080" help:"Operations listen address: /healthz, /readyz, /metrics (loopback by default; never a public address)."`
	ReadinessInterval     time.Duration `env:"INGRESS_READINESS_INTERVAL" default:"5s" help:"How often the stream is checked for /readyz (probes make no JetStream request)."`
	NATSURL               string        `name:"nats-url" env:"NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL."`
	NATSConnections       int           `name:"nats-connections" env:"INGRESS_NATS_CONNECTIONS" default:"1" help:"NATS connections publishes are spread over."`
	Secrets               string        `env:"PORTAL_WEBHOOK_SECRETS" help:"Comma-separated webhook secrets (whsec_...); all are accepted, for rotation. This or --secrets-file is required."`
	SecretsFile           string        `name:"secrets-file" env:"PORTAL_WEBHOOK_SECRETS_FILE" type:"existingfile" help:"File holding the webhook secrets, separated by commas or new lines."`
	Tolerance             time.Duration `env:"WEBHOOK_TOLERANCE" default:"5m" help:"Allowed clock difference of webhook-timestamp, either way."`
	MaxBodyBytes          int64         `env:"INGRESS_MAX_BODY_BYTES" default:"262144" help:"Largest accepted body."`
	PublishTimeout        time.Duration `env:"INGRESS_PUBLISH_TIMEOUT" default:"5s" help:"Wait for the JetStream ack before answering 503."`
	BatchMax              int           `name:"batch-max" env:"INGRESS_BATCH_MAX" default:"100" help:"Most events published together in one atomic batch (one disk flush); 0 or 1 publishes each alone."`
	BatchMin              int           `name:"batch-min" env:"INGRESS_BATCH_MIN" default:"16" help:"Fewest events published as one atomic batch; smaller groups are published one by one."`
	BatchWait             time.Duration `name:"batch-wait" env:"INGRESS_BATCH_WAIT" default:"1ms" help:"How long a group's first event waits for others; 0 does not wait."`
	BatchPublishers       int           `name:"batch-publishers" env:"INGRESS_BATCH_PUBLISHERS" default:"1" help:"Batches awaiting their acknowledgement at once."`
	RetryAfter            time.Duration `env:"INGRESS_RETRY_AFTER" default:"5s" help:"Retry-After sent with a 503."`
	DrainGrace            time.Duration `env:"INGRESS_DRAIN_GRACE" default:"5s" help:"On SIGTERM, how long /readyz answers 503 while webhooks are still served (with Connection: close) before the listener closes; 0: none."`
	ShutdownTimeout       time.Duration `env:"INGRESS_SHUTDOWN_TIMEOUT" default:"10s" help:"How long in-flight requests may finish after the drain grace."`
	ReadHeaderTimeout     time.Duration `env:"INGRESS_READ_HEADER_TIMEOUT" default:"5s" help:"Time allowed to read request headers."`
	ReadTimeout           time.Duration `env:"INGRESS_READ_TIMEOUT" default:"30s" help:"Time allowed to read a whole request."`
	MaxHeaderBytes        int           `env:"INGRESS_MAX_HEADER_BYTES" default:"16384" help:"Largest request header block (431 beyond)."`
	RateLimit             float64       `env:"INGRESS_RATE_LIMIT" default:"1000" help:"Requests per second allowed from one source address; 0 turns the limit off."`
	RateBurst             int           `env:"INGRESS_RATE_BURST" default:"0" help:"Burst allowed above the rate (0: twice the rate)."`
	RateLimitSources      int           `env:"INGRESS_RATE_LIMIT_SOURCES" default:"100000" help:"Sources the rate limit tracks (an IPv6 source by its /64), the least recently seen forgotten first."`
	AllowedSources        []string      `env:"INGRESS_ALLOWED_SOURCES" help:"Comma-separated networks (CIDR) webhooks may come from; empty allows all."`
	TrustedProxies        []string      `env:"INGRESS_TRUSTED_PROXIES" help:"Comma-separated networks of reverse proxies whose X-Forwarded-For is believed."`
	TLSCertFile           string        `name:"tls-cert-file" env:"INGRESS_TLS_CERT_FILE" help:"Serve HTTPS with this certificate (PEM)."`
	TLSKeyFile            string        `name:"tls-key-file" env:"INGRESS_TLS_KEY_FILE" help:"Private key (PEM) for --tls-cert-file."`
	DataverseKeys         string        `name:"dataverse-keys" env:"DATAVERSE_WEBHOOK_KEYS" help:"Comma-separated keys a Dataverse webhook may send (header or ?code=); all are accepted, for rotation. Setting these (or the file) serves POST /webhooks/dataverse."`
	DataverseKeysFile     string        `name:"dataverse-keys-file" env:"DATAVERSE_WEBHOOK_KEYS_FILE" type:"existingfile" help:"File holding the Dataverse keys, separated by commas or new lines."`
	DataverseKeyHeader    string        `name:"dataverse-key-header" env:"DATAVERSE_KEY_HEADER" default:"x-portalsync-key" help:"Header a Dataverse HttpHeader key is sent in."`
	DataverseOrganization string        `name:"dataverse-organization" env:"DATAVERSE_ORGANIZATION" help:"The x-ms-dynamics-organization Dataverse webhooks must carry (e.g. hlf.crm4.dynamics.com); required with Dataverse keys."`
	DataverseMappingFile  string        `name:"dataverse-mapping-file" env:"DATAVERSE_MAPPING_FILE" type:"existingfile" help:"JSON file mapping Dataverse tables and columns to members, organizations and memberships (docs/DATAVERSE.md); empty: the defaults."`
	LogLevel              string        `env:"LOG_LEVEL" default:"info" help:"debug, info, warn or error."`
	stream.Flags
}

func (s *serveCmd) Run(ctx context.Context, g *command.Globals) error {
	log, err := logging.New(s.LogLevel, g.Stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	secrets, err := loadSecrets(s.Secrets, s.SecretsFile)
	if err != nil {
		return err
	}
	allowed, err := parsePrefixes(s.AllowedSources)
	if err != nil {
		return fmt.Errorf("INGRESS_ALLOWED_SOURCES: %w", err)
	}
	trusted, err := parsePrefixes(s.TrustedProxies)
	if err != nil {
		return fmt.Errorf("INGRESS_TRUSTED_PROXIES: %w", err)
	}
	dv, err := loadDataverse(s.DataverseKeys, s.DataverseKeysFile, s.DataverseKeyHeader, s.DataverseOrganization, s.DataverseMappingFile)
	if err != nil {
		return err
	}
	cfg := s.config()
	cfg.Secrets, cfg.AllowedSources, cfg.TrustedProxies, cfg.Dataverse = secrets, allowed, trusted, dv
	return server.Run(ctx, cfg, log.Named("ingress"))
}

// config is the server configuration the flags describe, but for what
// must be read or parsed first (secrets, networks, Dataverse keys).
func (s *serveCmd) config() server.Config {
	return server.Config{
		Addr:              s.Addr,
		OpsAddr:           s.OpsAddr,
		ReadinessInterval: s.ReadinessInterval,
		NATSURL:           s.NATSURL,
		NATSConnections:   s.NATSConnections,
		Tolerance:         s.Tolerance,
		MaxBodyBytes:      s.MaxBodyBytes,
		PublishTimeout:    s.PublishTimeout,
		BatchMax:          max(s.BatchMax, 1), // 0 means off here, not the default
		BatchMin:          min(s.BatchMin, max(s.BatchMax, 1)),
		BatchWait:         command.Off(s.BatchWait),
		BatchPublishers:   s.BatchPublishers,
		RetryAfter:        s.RetryAfter,
		DrainGrace:        command.Off(s.DrainGrace),
		ShutdownTimeout:   s.ShutdownTimeout,
		ReadHeaderTimeout: s.ReadHeaderTimeout,
		ReadTimeout:       s.ReadTimeout,
		MaxHeaderBytes:    s.MaxHeaderBytes,
		RateLimit:         command.Off(s.RateLimit),
		RateBurst:         s.RateBurst,
		RateLimitSources:  s.RateLimitSources,
		TLSCertFile:       s.TLSCertFile,
		TLSKeyFile:        s.TLSKeyFile,
		Stream:            s.Config(),
	}
}

// loadSecrets reads the webhook secrets from the environment's list or from
// a file (one of them). The values are never logged.
func loadSecrets(list, file string) ([]signature.Secret, error) {
	switch {
	case list != "" && file != "":
		return nil, errors.New("set PORTAL_WEBHOOK_SECRETS or PORTAL_WEBHOOK_SECRETS_FILE, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("PORTAL_WEBHOOK_SECRETS_FILE: %w", err)
		}
		secrets, err := signature.ParseSecrets(strings.NewReplacer("\r\n", ",", "\n", ",").Replace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("PORTAL_WEBHOOK_SECRETS_FILE: %w", err)
		}
		return secrets, nil
	default:
		secrets, err := signature.ParseSecrets(list)
		if err != nil {
			return nil, fmt.Errorf("PORTAL_WEBHOOK_SECRETS: %w", err)
		}
		return secrets, nil
	}
}

// loadDataverse builds the Dataverse intake's configuration, or nil when
// no key is set (the intake is off). The keys are never logged.
func loadDataverse(list, file, header, org, mappingFile string) (*dataverse.Config, error) {
	if list != "" && file != "" {
		return nil, errors.New("set DATAVERSE_WEBHOOK_KEYS or DATAVERSE_WEBHOOK_KEYS_FILE, not both")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("DATAVERSE_WEBHOOK_KEYS_FILE: %w", err)
		}
		list = string(b)
	}
	keys := dataverse.ParseKeys(list)
	if len(keys) == 0 {
		if file != "" {
			return nil, errors.New("DATAVERSE_WEBHOOK_KEYS_FILE holds no key")
		}
		if org != "" || mappingFile != "" {
			return nil, errors.New("DATAVERSE_ORGANIZATION or DATAVERSE_MAPPING_FILE is set but no DATAVERSE_WEBHOOK_KEYS")
		}
		return nil, nil
	}
	m, err := dvmap.LoadMapping(mappingFile)
	if err != nil {
		return nil, err
	}
	cfg := &dataverse.Config{Keys: keys, KeyHeader: header, Organization: org, Mapping: &m}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dataverse: %w", err)
	}
	return cfg, nil
}

// parsePrefixes parses CIDR networks; a bare address is a one-address
// network.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			addr, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("%q is neither a network nor an address", item)
			}
			out = append(out, netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not a network (CIDR): %w", item, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
