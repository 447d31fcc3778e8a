package webhooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// tokenwarm's own headers of every delivery. HeaderSignature is the legacy
// signature, sent next to the Standard Webhooks one during the transition
// (Config.NoLegacySignature turns it off).
const (
	HeaderEventID   = "Tokenwarm-Event-Id"
	HeaderEventType = "Tokenwarm-Event-Type"
	HeaderSignature = "Tokenwarm-Signature"
)

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Errors returned by Verify.
var (
	ErrMalformedSignature = errors.New("webhooks: malformed signature header")
	ErrStaleSignature     = errors.New("webhooks: signature timestamp outside tolerance")
	ErrSignatureMismatch  = errors.New("webhooks: no signature matches")
)

// Sign returns the legacy Tokenwarm-Signature header value for body sent
// at t: "t=<unix>,v1=<hex>", with one v1 per secret (several during a
// rotation). The HMAC key is each secret's literal bytes, exactly as
// before the Standard Webhooks signature existed, whatever the secret
// looks like, so receivers of this header never see a change.
func Sign(secret string, t time.Time, body []byte, more ...string) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=" + ts)
	for _, s := range append([]string{secret}, more...) {
		b.WriteString(",v1=" + hex.EncodeToString(mac(s, ts, body)))
	}
	return b.String()
}

func mac(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a Tokenwarm-Signature header against the raw request body:
// one of its v1 signatures must be the HMAC of "<t>.<body>" under secret
// (several are allowed so a secret can be rotated), and t must be within
// tolerance of now (DefaultTolerance if tolerance <= 0), which limits
// replays. Unknown schemes are ignored, as new ones may be added.
func Verify(secret string, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrMalformedSignature
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrMalformedSignature
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return ErrMalformedSignature
			}
			sigs = append(sigs, sig)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return ErrMalformedSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrMalformedSignature
	}
	if age := now.Sub(time.Unix(sec, 0)); age > tolerance || age < -tolerance {
		return ErrStaleSignature
	}
	want := mac(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
