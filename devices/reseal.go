package devices

import (
	"context"
	"fmt"

	"github.com/tokenwarm/tokenwarm/seal"
)

// Resealed counts what a reseal pass of the device records replaced, and
// what it missed because the value changed meanwhile (a successor spent
// or erased: a later pass finds nothing left of it).
type Resealed struct {
	SigningKeys, Successors int
	Missed                  int
}

// Reseal moves the sealed values of device records to the ring's active
// key: the private halves of every signing key (retired ones too, so that
// nothing stays sealed under a dropped key) and the successors kept for
// the reuse interval. Safe next to running servers: each value is
// replaced by a compare-and-swap, and a replica that still holds the old
// key in its ring opens both.
func (s *Service) Reseal(ctx context.Context) (Resealed, error) {
	var out Resealed
	n, missed, err := s.ring.ResealAll(ctx, func(ctx context.Context, after string, n int) ([]seal.Stored, error) {
		keys, err := s.db.SigningKeysAfter(ctx, after, n)
		vals := make([]seal.Stored, len(keys))
		for i, k := range keys {
			vals[i] = seal.Stored{Key: k.Kid, Sealed: k.PrivateSealed, AD: sealAD(k.Kid), Name: "signing key " + k.Kid}
		}
		return vals, err
	}, s.db.ReplaceSealedSigningKey)
	out.SigningKeys, out.Missed = n, missed
	if err != nil {
		return out, fmt.Errorf("devices: reseal: %w", err)
	}
	n, missed, err = s.ring.ResealAll(ctx, func(ctx context.Context, after string, n int) ([]seal.Stored, error) {
		toks, err := s.db.KeptSuccessorsAfter(ctx, after, n)
		vals := make([]seal.Stored, len(toks))
		for i, t := range toks {
			// The successor is the session's token of the next generation.
			vals[i] = seal.Stored{Key: t.TokenHash, Sealed: t.SuccessorSealed, AD: successorAD(t.SessionID, t.Generation+1),
				Name: "kept successor of session " + t.SessionID}
		}
		return vals, err
	}, s.db.ReplaceSealedSuccessor)
	out.Successors, out.Missed = n, out.Missed+missed
	if err != nil {
		return out, fmt.Errorf("devices: reseal: %w", err)
	}
	// The signer's cached private key is the same key, whatever seals it.
	return out, nil
}
