package signature_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/likeperson/portalsync/pkg/signature"
)

// The vector published with the Standard Webhooks specification and its
// reference libraries.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t *testing.T, s string) signature.Secret {
	t.Helper()
	sec, err := signature.ParseSecret(s)
	require.NoError(t, err)
	return sec
}

func fixedNow(unix int64) func() time.Time { return func() time.Time { return time.Unix(unix, 0) } }

func newVerifier(t *testing.T, now int64, secrets ...signature.Secret) *signature.Verifier {
	t.Helper()
	v, err := signature.NewVerifier(signature.VerifierConfig{Secrets: secrets, Now: fixedNow(now)})
	require.NoError(t, err)
	return v
}

func TestSpecVector(t *testing.T) {
	t.Parallel()
	sec := mustSecret(t, specSecret)
	require.Equal(t, specSignature, sec.Sign(specID, time.Unix(specTimestamp, 0), []byte(specBody)))

	v := newVerifier(t, specTimestamp, sec)
	require.NoError(t, v.Verify(specID, strconv.Itoa(specTimestamp), specSignature, []byte(specBody)))
	// Without the prefix the secret is the same.
	require.Equal(t, specSignature, mustSecret(t, strings.TrimPrefix(specSecret, "whsec_")).Sign(specID, time.Unix(specTimestamp, 0), []byte(specBody)))
}

func TestVerifyFailures(t *testing.T) {
	t.Parallel()
	sec := mustSecret(t, specSecret)
	ts := strconv.Itoa(specTimestamp)
	other, err := signature.NewSecret([]byte("another-secret-of-32-bytes-long!"))
	require.NoError(t, err)

	tests := []struct {
		name              string
		id, ts, sig, body string
		now               int64
		want              signature.Reason
	}{
		{name: "TamperedBody", id: specID, ts: ts, sig: specSignature, body: `{"test": 2432232315}`, now: specTimestamp, want: signature.ReasonNoMatch},
		{name: "TamperedID", id: specID + "x", ts: ts, sig: specSignature, body: specBody, now: specTimestamp, want: signature.ReasonNoMatch},
		{name: "WrongSecret", id: specID, ts: ts, sig: other.Sign(specID, time.Unix(specTimestamp, 0), []byte(specBody)), body: specBody, now: specTimestamp, want: signature.ReasonNoMatch},
		{name: "TooOld", id: specID, ts: ts, sig: specSignature, body: specBody, now: specTimestamp + 301, want: signature.ReasonTimestampTooOld},
		{name: "TooNew", id: specID, ts: ts, sig: specSignature, body: specBody, now: specTimestamp - 301, want: signature.ReasonTimestampTooNew},
		{name: "MissingID", ts: ts, sig: specSignature, body: specBody, now: specTimestamp, want: signature.ReasonMissingHeader},
		{name: "MissingTimestamp", id: specID, sig: specSignature, body: specBody, now: specTimestamp, want: signature.ReasonMissingHeader},
		{name: "MissingSignature", id: specID, ts: ts, body: specBody, now: specTimestamp, want: signature.ReasonMissingHeader},
		{name: "TimestampNotNumber", id: specID, ts: "16142653x0", sig: specSignature, body: specBody, now: specTimestamp, want: signature.ReasonMalformedTimestamp},
		{name: "TimestampNegative", id: specID, ts: "-1614265330", sig: specSignature, body: specBody, now: specTimestamp, want: signature.ReasonMalformedTimestamp},
		{name: "TimestampHuge", id: specID, ts: "99999999999999999999", sig: specSignature, body: specBody, now: specTimestamp, want: signature.ReasonMalformedTimestamp},
		{name: "SignatureNoVersion", id: specID, ts: ts, sig: "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body: specBody, now: specTimestamp, want: signature.ReasonMalformedSignature},
		{name: "SignatureOtherVersionOnly", id: specID, ts: ts, sig: "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body: specBody, now: specTimestamp, want: signature.ReasonMalformedSignature},
		{name: "SignatureNotBase64", id: specID, ts: ts, sig: "v1,!!!", body: specBody, now: specTimestamp, want: signature.ReasonMalformedSignature},
		{name: "SignatureEmptyValue", id: specID, ts: ts, sig: "v1,", body: specBody, now: specTimestamp, want: signature.ReasonMalformedSignature},
		{name: "SignatureTooMany", id: specID, ts: ts, sig: strings.Repeat("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= ", 17) + specSignature, body: specBody, now: specTimestamp, want: signature.ReasonMalformedSignature},
		{name: "IDWithSpace", id: "msg 1", ts: ts, sig: specSignature, body: specBody, now: specTimestamp, want: signature.ReasonMalformedID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := newVerifier(t, tt.now, sec)
			err := v.Verify(tt.id, tt.ts, tt.sig, []byte(tt.body))
			require.Error(t, err)
			require.Equal(t, tt.want, signature.ReasonOf(err), err.Error())
		})
	}
}

func TestClockSkewWithinTolerance(t *testing.T) {
	t.Parallel()
	sec := mustSecret(t, specSecret)
	ts := strconv.Itoa(specTimestamp)
	for _, skew := range []int64{-300, -299, 0, 299, 300} {
		v := newVerifier(t, specTimestamp+skew, sec)
		require.NoError(t, v.Verify(specID, ts, specSignature, []byte(specBody)), "skew %d", skew)
	}
	// A configured tolerance is honoured both ways.
	v, err := signature.NewVerifier(signature.VerifierConfig{Secrets: []signature.Secret{sec}, Tolerance: 10 * time.Second, Now: fixedNow(specTimestamp + 11)})
	require.NoError(t, err)
	require.Equal(t, signature.ReasonTimestampTooOld, signature.ReasonOf(v.Verify(specID, ts, specSignature, []byte(specBody))))
	v, err = signature.NewVerifier(signature.VerifierConfig{Secrets: []signature.Secret{sec}, Tolerance: 10 * time.Second, Now: fixedNow(specTimestamp - 11)})
	require.NoError(t, err)
	require.Equal(t, signature.ReasonTimestampTooNew, signature.ReasonOf(v.Verify(specID, ts, specSignature, []byte(specBody))))
}

func TestRotation(t *testing.T) {
	t.Parallel()
	oldSec := mustSecret(t, specSecret)
	newSec, err := signature.NewSecret([]byte("the-new-secret-after-rotation-32"))
	require.NoError(t, err)
	now := time.Unix(specTimestamp, 0)
	body := []byte(specBody)

	both := newVerifier(t, specTimestamp, oldSec, newSec)
	// During rotation a sender signing with either secret is accepted.
	require.NoError(t, both.Verify(specID, strconv.Itoa(specTimestamp), oldSec.Sign(specID, now, body), body))
	require.NoError(t, both.Verify(specID, strconv.Itoa(specTimestamp), newSec.Sign(specID, now, body), body))
	// A sender signing with both sends two signatures; any match suffices.
	h := http.Header{}
	signature.NewSigner(oldSec, newSec).SetHeaders(h, specID, now, body)
	require.Len(t, strings.Split(h.Get(signature.HeaderSignature), " "), 2)
	require.NoError(t, newVerifier(t, specTimestamp, newSec).VerifyHeaders(h, body))
	// After rotation the old secret is refused.
	onlyNew := newVerifier(t, specTimestamp, newSec)
	err = onlyNew.Verify(specID, strconv.Itoa(specTimestamp), oldSec.Sign(specID, now, body), body)
	require.Equal(t, signature.ReasonNoMatch, signature.ReasonOf(err))
}

func TestParseSecrets(t *testing.T) {
	t.Parallel()
	secs, err := signature.ParseSecrets(specSecret + ", ," + specSecret)
	require.NoError(t, err)
	require.Len(t, secs, 2)
	require.NotContains(t, secs[0].String(), "MfKQ9r8")
	require.Equal(t, specSecret, secs[0].Text())

	for _, bad := range []string{"", " , ", "whsec_", "whsec_not*base64", "whsec_c2hvcnQ="} {
		_, err := signature.ParseSecrets(bad)
		require.Error(t, err, bad)
	}
	_, err = signature.NewVerifier(signature.VerifierConfig{})
	require.Error(t, err)
}

func FuzzParseSignatureHeader(f *testing.F) {
	for _, s := range []string{specSignature, "v1,a v1,b", "v1a,xyz " + specSignature, "", " ", ",", "v1,", "v2,abc", strings.Repeat("v1,x ", 20)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		sigs, err := signature.ParseSignatureHeader(h)
		if err != nil {
			require.Equal(t, signature.ReasonMalformedSignature, signature.ReasonOf(err))
			require.Nil(t, sigs)
			return
		}
		require.NotEmpty(t, sigs)
		for _, s := range sigs {
			require.Len(t, s, 32)
		}
	})
}

func FuzzVerify(f *testing.F) {
	f.Add(specID, strconv.Itoa(specTimestamp), specSignature, []byte(specBody))
	f.Add("", "", "", []byte{})
	f.Add(specID, "1e9", "v1,,,", []byte("{}"))
	sec, err := signature.ParseSecret(specSecret)
	if err != nil {
		f.Fatal(err)
	}
	v, err := signature.NewVerifier(signature.VerifierConfig{Secrets: []signature.Secret{sec}, Now: fixedNow(specTimestamp)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		err := v.Verify(id, ts, sig, body)
		if err != nil && signature.ReasonOf(err) == "" {
			t.Fatalf("error without reason: %v", err)
		}
		// Whatever verifies must be exactly what the secret signs.
		if err == nil {
			n, perr := strconv.ParseInt(ts, 10, 64)
			require.NoError(t, perr)
			require.Contains(t, strings.Split(sig, " "), sec.Sign(id, time.Unix(n, 0), body))
		}
	})
}
