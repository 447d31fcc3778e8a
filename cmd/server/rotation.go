package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/devices"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/pkce"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
)

// Key rotation (docs/RUNBOOK-KEY-ROTATION.md).

// deviceService is the device-session service of cfg.
func deviceService(cfg *Config, db *models.DB, ring *seal.Ring, clk clock.Clock, onReuse func()) *devices.Service {
	return devices.New(db, ring, clk, devices.Config{Issuer: cfg.PublicURL,
		AccessTTL: cfg.DeviceTokenTTL, RefreshIdleTTL: cfg.DeviceIdleTTL, RefreshReuseInterval: cfg.DeviceReuseInterval,
		OnReuse: onReuse})
}

// resealPasses bounds the passes of reseal: one rewrites, the next one
// must find nothing left under another key.
const resealPasses = 5

// reseal moves every stored sealed value to the ring's active key, pass
// after pass until a pass finds none under another key, then says when
// the other keys may be dropped: values that are not stored (admin UI
// sessions, re-authorization links) cannot be moved and open only while
// their key is in the ring.
func reseal(ctx context.Context, cfg *Config, db *models.DB, ring *seal.Ring, log *slog.Logger, stdout io.Writer) error {
	dev := deviceService(cfg, db, ring, clock.System{}, nil)
	pending := pkce.NewStore(db, ring, nil, 0)
	var conns, verifiers int
	var dv devices.Resealed
	for pass := 1; ; pass++ {
		c, err := vault.Reseal(ctx, db, ring, log)
		if err != nil {
			return err
		}
		d, err := dev.Reseal(ctx)
		if err != nil {
			return err
		}
		p, pMissed, err := pending.Reseal(ctx)
		if err != nil {
			return err
		}
		conns, verifiers = conns+c, verifiers+p
		dv.SigningKeys, dv.Successors = dv.SigningKeys+d.SigningKeys, dv.Successors+d.Successors
		if c+d.SigningKeys+d.Successors+d.Missed+p+pMissed == 0 {
			break
		}
		if pass == resealPasses {
			return fmt.Errorf("reseal: after %d passes values are still being sealed under an old key; "+
				"is every replica running with %q first in TOKENWARM_SEAL_KEYS? Restart them all, then run reseal again",
				pass, ring.ActiveKeyID())
		}
	}
	active := ring.ActiveKeyID()
	fmt.Fprintf(stdout, "resealed under key %q: %d connection(s), %d signing key(s), %d pending authorization(s), %d kept device refresh successor(s)\n",
		active, conns, dv.SigningKeys, verifiers, dv.Successors)
	old := ring.KeyIDs()[1:]
	if len(old) == 0 {
		fmt.Fprintln(stdout, "the ring has one key: nothing stored is sealed under another")
		return nil
	}
	wait := max(cfg.AdminSessionTTL, cfg.ReauthLinkTTL)
	fmt.Fprintf(stdout, "nothing stored is sealed under %s any more\n", quoteAll(old))
	fmt.Fprintf(stdout, "not stored, so not resealed: admin UI sessions (TOKENWARM_ADMIN_SESSION_TTL %s) and re-authorization links (TOKENWARM_REAUTH_LINK_TTL %s) "+
		"made before every replica sealed with %q open only while their key is in TOKENWARM_SEAL_KEYS\n",
		cfg.AdminSessionTTL, cfg.ReauthLinkTTL, active)
	fmt.Fprintf(stdout, "drop %s after %s: nobody is signed out and no link breaks; dropping earlier signs admins out and breaks older re-authorization links (make new ones)\n",
		quoteAll(old), time.Now().Add(wait).UTC().Format(time.RFC3339))
	return nil
}

func quoteAll(ids []string) string {
	q := make([]string, len(ids))
	for i, id := range ids {
		q[i] = fmt.Sprintf("%q", id)
	}
	return "key(s) " + strings.Join(q, ", ")
}

// rotateSigningKey adds a device JWT signing key that signs from now on;
// the older keys keep verifying until the tokens they signed have expired
// and then retire by themselves.
func rotateSigningKey(ctx context.Context, cfg *Config, db *models.DB, ring *seal.Ring, stdout io.Writer) error {
	dev := deviceService(cfg, db, ring, clock.System{}, nil)
	before, err := dev.JWKS(ctx)
	if err != nil {
		return err
	}
	if len(before.Keys) == 0 {
		return errors.New("rotate-signing-key: no signing key yet (a server creates the first one when it starts)")
	}
	kid, retireAt, err := dev.RotateSigningKey(ctx)
	if err != nil {
		return err
	}
	older := make([]string, len(before.Keys))
	for i, k := range before.Keys {
		older[i] = k.Kid
	}
	fmt.Fprintf(stdout, "new signing key %q: in the JWKS now; every replica signs with it within two minutes (a fifth of TOKENWARM_DEVICE_TOKEN_TTL when that is shorter), once every replica verifies it\n", kid)
	fmt.Fprintf(stdout, "older %s verify until %s (TOKENWARM_DEVICE_TOKEN_TTL %s after the last replica stopped signing with them) and then retire by themselves\n",
		quoteAll(older), retireAt.UTC().Format(time.RFC3339), cfg.DeviceTokenTTL)
	return nil
}

// retireSigningKey retires a device JWT signing key at once: its tokens
// are refused from then on (on every replica within the key cache age).
func retireSigningKey(ctx context.Context, cfg *Config, db *models.DB, ring *seal.Ring, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: tokenwarm retire-signing-key KID")
	}
	if err := deviceService(cfg, db, ring, clock.System{}, nil).RetireSigningKey(ctx, args[0]); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signing key %q retired: its tokens are refused on every replica within a minute\n", args[0])
	return nil
}
