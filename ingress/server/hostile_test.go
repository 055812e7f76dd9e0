package server_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/likeperson/portalsync/ingress/server"
	"github.com/likeperson/portalsync/pkg/portalclient"
	"github.com/likeperson/portalsync/pkg/signature"
	"github.com/likeperson/portalsync/pkg/stream"
	"github.com/likeperson/portalsync/testkit/natstest"
	"github.com/likeperson/portalsync/testkit/servicetest"
)

func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) {
		c.ReadHeaderTimeout = 300 * time.Millisecond
		c.ReadTimeout = 600 * time.Millisecond
	})
	addr := strings.TrimPrefix(b.base, "http://")

	// Headers that never end.
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST /webhooks/portal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err = io.ReadAll(conn)
	require.NoError(t, err, "the server closes the connection")
	require.Less(t, time.Since(start), 3*time.Second)

	// A body that trickles in.
	conn2, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn2.Close()
	_, err = io.WriteString(conn2, "POST /webhooks/portal HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	require.NoError(t, err)
	start = time.Now()
	require.NoError(t, conn2.SetReadDeadline(time.Now().Add(5*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn2), nil)
	if err == nil {
		resp.Body.Close()
		require.GreaterOrEqual(t, resp.StatusCode, 400)
	}
	require.Less(t, time.Since(start), 3*time.Second)
	require.EqualValues(t, 0, b.streamMsgs(t))
}

func TestOversizedHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) { c.MaxHeaderBytes = 4096 })
	req, err := http.NewRequest(http.MethodPost, b.client.URL, strings.NewReader("{}"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Padding", strings.Repeat("a", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}

func TestHostileJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	deepArray := strings.Repeat("[", 200_000)
	deepInField := `{"id":"evt_deep","type":"membership-created","occurred_at":"2026-11-25T10:00:00Z","member":{"id":"m","x":` +
		strings.Repeat(`{"a":`, 20_000) + `1` + strings.Repeat(`}`, 20_000) + `}}`
	for name, body := range map[string]string{"DeepArray": deepArray, "DeepObjectInField": deepInField} {
		start := time.Now()
		resp, err := b.client.Send(ctx, "evt_deep", []byte(body))
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, resp.Status, name)
		decodeProblem(t, resp)
		require.Less(t, time.Since(start), 2*time.Second, name)
	}
	require.EqualValues(t, 0, b.streamMsgs(t))
}

func TestIDsCannotLeaveTheirKey(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	for _, id := range []string{"a.>", "*", ">", "a b", "æøå", "m\u202e1", "a\x00b", "a\tb", "portal.member.*", strings.Repeat("x", 129)} {
		ev := sampleEvent("evt_bad_member", id)
		resp, err := b.client.SendEvent(ctx, ev)
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, resp.Status, "member id %q", id)
		p := decodeProblem(t, resp)
		require.Equal(t, "member.id", p.Errors[0].Field)
	}
	for _, id := range []string{"evt_æ", "evt.>"} {
		resp, err := b.client.SendEvent(ctx, sampleEvent(id, "m1"))
		require.NoError(t, err)
		require.Equal(t, http.StatusBadRequest, resp.Status, "event id %q", id)
	}
	require.EqualValues(t, 0, b.streamMsgs(t))
}

func TestFloodOfDistinctWebhookIDs(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	ctx := context.Background()
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	ids := make(chan int)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				resp, err := b.client.SendEvent(ctx, sampleEvent(fmt.Sprintf("evt_flood_%d", i), fmt.Sprintf("m%d", i%50)))
				if err == nil && resp.Status != http.StatusAccepted {
					err = fmt.Errorf("status %d", resp.Status)
				}
				errs <- err
			}
		}()
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.EqualValues(t, n, b.streamMsgs(t), "each distinct id stored once")
}

func TestRateLimitPerSource(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *server.Config) {
		c.RateLimit, c.RateBurst = 2, 3
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	ctx := context.Background()
	send := func(i int, source string) *portalclient.Response {
		body := mustJSON(t, sampleEvent(fmt.Sprintf("evt_rl_%s_%d", source, i), "m1"))
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.client.URL, strings.NewReader(string(body)))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", source)
		b.client.Signer.SetHeaders(req.Header, fmt.Sprintf("evt_rl_%s_%d", source, i), time.Now(), body)
		resp, err := b.client.Do(req)
		require.NoError(t, err)
		return resp
	}
	statuses := map[int]int{}
	var limited *portalclient.Response
	for i := range 6 {
		r := send(i, "203.0.113.10")
		statuses[r.Status]++
		if r.Status == http.StatusTooManyRequests {
			limited = r
		}
	}
	require.Equal(t, 3, statuses[http.StatusAccepted], "the burst passes")
	require.Equal(t, 3, statuses[http.StatusTooManyRequests])
	require.NotNil(t, limited)
	require.Equal(t, "1", limited.Header.Get("Retry-After"))
	require.Equal(t, "urn:portalsync:problem:rate-limited", decodeProblem(t, limited).Type)
	// Another source is not affected.
	require.Equal(t, http.StatusAccepted, send(0, "203.0.113.11").Status)
	// Health endpoints are never limited.
	for range 10 {
		r, err := http.Get(b.ops + "/healthz")
		require.NoError(t, err)
		r.Body.Close()
		require.Equal(t, http.StatusOK, r.StatusCode)
	}
}

func TestSourceAllowlist(t *testing.T) {
	t.Parallel()
	denied := setup(t, func(c *server.Config) { c.AllowedSources = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} })
	resp, err := denied.client.SendEvent(context.Background(), sampleEvent("evt_allow", "m1"))
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, resp.Status)
	require.Equal(t, "urn:portalsync:problem:source-not-allowed", decodeProblem(t, resp).Type)

	// X-Forwarded-For from an untrusted peer changes nothing.
	body := mustJSON(t, sampleEvent("evt_allow", "m1"))
	req, err := http.NewRequest(http.MethodPost, denied.client.URL, strings.NewReader(string(body)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "10.1.2.3")
	denied.client.Signer.SetHeaders(req.Header, "evt_allow", time.Now(), body)
	resp, err = denied.client.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, resp.Status)

	allowed := setup(t, func(c *server.Config) { c.AllowedSources = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	resp, err = allowed.client.SendEvent(context.Background(), sampleEvent("evt_allow", "m1"))
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.Status)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	roots := writeSelfSigned(t, certFile, keyFile)
	ns := natstest.Run(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opsLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	secret := testSecret(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, server.Config{Listener: ln, OpsListener: opsLn, DrainGrace: 10 * time.Millisecond, NATSURL: ns.URL(), Secrets: []signature.Secret{secret},
			TLSCertFile: certFile, TLSKeyFile: keyFile, Stream: stream.Config{Name: "EVENTS"}}, zaptest.NewLogger(t))
	}()
	defer func() { cancel(); require.NoError(t, <-done) }()

	httpsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	base := "https://" + ln.Addr().String()
	servicetest.WaitReady(t, "http://"+opsLn.Addr().String(), nil) // the operations listener is plain HTTP
	client := &portalclient.Client{URL: base + server.WebhookPath, Signer: signature.NewSigner(secret), HTTP: httpsClient}
	resp, err := client.SendEvent(context.Background(), sampleEvent("evt_tls", "m1"))
	require.NoError(t, err)
	require.Equal(t, http.StatusAccepted, resp.Status)

	// Plain HTTP is not served on the TLS port.
	r, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err == nil {
		r.Body.Close()
		require.Equal(t, http.StatusBadRequest, r.StatusCode)
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and returns a pool
// that trusts it.
func writeSelfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portalsync test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
