package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/testkit/flagtest"
)

const (
	secretA = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretB = "whsec_cG9ydGFsc3luYy1yb3RhdGVkLXNlY3JldC0zMmI="
)

func TestLoadSecrets(t *testing.T) {
	t.Parallel()
	secs, err := loadSecrets(secretA+","+secretB, "")
	require.NoError(t, err)
	require.Len(t, secs, 2)

	file := filepath.Join(t.TempDir(), "secrets")
	require.NoError(t, os.WriteFile(file, []byte(secretA+"\n"+secretB+"\n"), 0o600))
	secs, err = loadSecrets("", file)
	require.NoError(t, err)
	require.Len(t, secs, 2)

	_, err = loadSecrets(secretA, file)
	require.ErrorContains(t, err, "not both")
	_, err = loadSecrets("", "")
	require.ErrorContains(t, err, "PORTAL_WEBHOOK_SECRETS")
	require.NoError(t, os.WriteFile(file, []byte("whsec_bad!"), 0o600))
	_, err = loadSecrets("", file)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "bad!", "the secret's value is not echoed")
}

func TestParsePrefixes(t *testing.T) {
	t.Parallel()
	got, err := parsePrefixes([]string{"10.0.0.0/8", " 192.0.2.7 ", "", "2001:db8::/32", "::ffff:198.51.100.1"})
	require.NoError(t, err)
	require.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("198.51.100.1/32"),
	}, got)
	_, err = parsePrefixes([]string{"10.0.0.0/33"})
	require.Error(t, err)
	_, err = parsePrefixes([]string{"example.org"})
	require.Error(t, err)
}

func TestLoadDataverse(t *testing.T) {
	t.Parallel()
	const keyA, keyB = "dataverse-key-a-0123456789abcdef", "dataverse-key-b-0123456789abcdef"
	cfg, err := loadDataverse("", "", "", "", "")
	require.NoError(t, err)
	require.Nil(t, cfg, "no key: the intake is off")

	cfg, err = loadDataverse(keyA+","+keyB, "", "x-api-key", "hlf.crm4.dynamics.com", "")
	require.NoError(t, err)
	require.Equal(t, []string{keyA, keyB}, cfg.Keys)
	require.Equal(t, "contact", cfg.Mapping.Member.Table, "the default mapping")

	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	require.NoError(t, os.WriteFile(keys, []byte(keyA+"\n"+keyB+"\n"), 0o600))
	mapping := filepath.Join(dir, "mapping.json")
	require.NoError(t, os.WriteFile(mapping, []byte(`{"membership": {"table": "hlf_medlemskap"}}`), 0o600))
	cfg, err = loadDataverse("", keys, "", "hlf.crm4.dynamics.com", mapping)
	require.NoError(t, err)
	require.Len(t, cfg.Keys, 2)
	require.Equal(t, "hlf_medlemskap", cfg.Mapping.Membership.Table)

	_, err = loadDataverse(keyA, keys, "", "hlf.crm4.dynamics.com", "")
	require.ErrorContains(t, err, "not both")
	_, err = loadDataverse(keyA, "", "", "", "")
	require.ErrorContains(t, err, "DATAVERSE_ORGANIZATION")
	_, err = loadDataverse("", "", "", "hlf.crm4.dynamics.com", "")
	require.ErrorContains(t, err, "DATAVERSE_WEBHOOK_KEYS")
	_, err = loadDataverse("short", "", "", "hlf.crm4.dynamics.com", "")
	require.ErrorContains(t, err, "shorter than")
	require.NotContains(t, err.Error(), "short\"")
	require.NoError(t, os.WriteFile(mapping, []byte(`{"member": {"table": "account"}}`), 0o600))
	_, err = loadDataverse(keyA, "", "", "hlf.crm4.dynamics.com", mapping)
	require.ErrorContains(t, err, "three different tables", "the mapping is validated at start")
}

// serveConfig is the server configuration the serve command builds from
// args, its environment ignored.
func serveConfig(t *testing.T, args ...string) server.Config {
	t.Helper()
	var c cli
	flagtest.Parse(t, &c, append([]string{"serve"}, args...), kong.Vars{"readyz": ""})
	return c.Serve.config()
}

// The binary's flags default to server.Config's defaults, so a Config
// built in code (the tests, the e2e harness) runs as the binary does.
func TestFlagDefaultsAreConfigDefaults(t *testing.T) {
	t.Parallel()
	want, got := server.Config{}.WithDefaults(), serveConfig(t)
	want.Now = nil // a function is never equal to another
	require.Equal(t, want, got)
}

// 0 on the command line turns the drain grace, the batch wait and the rate
// limit off; in a Config that is a negative value (0 takes the default).
func TestZeroFlagsTurnOff(t *testing.T) {
	t.Parallel()
	cfg := serveConfig(t, "--drain-grace=0", "--batch-wait=0", "--rate-limit=0", "--batch-max=0")
	require.Equal(t, time.Duration(-1), cfg.DrainGrace)
	require.Equal(t, time.Duration(-1), cfg.BatchWait)
	require.Equal(t, -1.0, cfg.RateLimit)
	require.Equal(t, 1, cfg.BatchMax, "0 publishes each event alone")
	cfg = serveConfig(t, "--drain-grace=3s", "--rate-limit=5")
	require.Equal(t, 3*time.Second, cfg.DrainGrace)
	require.Equal(t, 5.0, cfg.RateLimit)
}
