package models

import (
	"context"

	"gorm.io/gorm"
)

// Sealed values outside connections, for `tokenwarm reseal` (a seal key
// rotation): the private halves of device signing keys, the PKCE verifiers
// of pending authorizations and the successors kept for the device refresh
// reuse interval. Each is paged by primary key and replaced by a
// compare-and-swap on the sealed value itself, so a reseal running next to
// the servers never overwrites a value they changed or erased meanwhile
// (the swap then simply finds nothing to replace).

// SigningKeysAfter returns up to n signing keys, retired ones included,
// with a kid after after, in kid order.
func (d *DB) SigningKeysAfter(ctx context.Context, after string, n int) ([]SigningKey, error) {
	var out []SigningKey
	return out, pageAfter(d.gorm.WithContext(ctx), "kid", after, n).Find(&out).Error
}

// PendingAuthorizationsAfter returns up to n pending authorizations, used
// and expired ones included, with a state hash after after, in that order.
func (d *DB) PendingAuthorizationsAfter(ctx context.Context, after string, n int) ([]PendingAuthorization, error) {
	var out []PendingAuthorization
	return out, pageAfter(d.gorm.WithContext(ctx), "state_hash", after, n).Find(&out).Error
}

// KeptSuccessorsAfter returns up to n device refresh tokens that keep a
// sealed successor, with a token hash after after, in that order.
func (d *DB) KeptSuccessorsAfter(ctx context.Context, after string, n int) ([]DeviceRefreshToken, error) {
	var out []DeviceRefreshToken
	q := pageAfter(d.gorm.WithContext(ctx), "token_hash", after, n).Where("successor_sealed <> ''")
	return out, q.Find(&out).Error
}

func pageAfter(q *gorm.DB, key, after string, n int) *gorm.DB {
	q = q.Order(key).Limit(n)
	if after != "" {
		q = q.Where(key+" > ?", after)
	}
	return q
}

// ReplaceSealedSigningKey replaces the sealed private key of kid, only if
// it still reads old; it reports whether it did.
func (d *DB) ReplaceSealedSigningKey(ctx context.Context, kid, old, new string) (bool, error) {
	return d.replaceSealed(ctx, &SigningKey{}, "kid", kid, "private_sealed", old, new)
}

// ReplaceSealedVerifier replaces the sealed verifier of a pending
// authorization, only if it still reads old; it reports whether it did.
func (d *DB) ReplaceSealedVerifier(ctx context.Context, stateHash, old, new string) (bool, error) {
	return d.replaceSealed(ctx, &PendingAuthorization{}, "state_hash", stateHash, "verifier_sealed", old, new)
}

// ReplaceSealedSuccessor replaces the kept successor of a device refresh
// token, only if it still reads old (an erased or spent one is left
// alone); it reports whether it did.
func (d *DB) ReplaceSealedSuccessor(ctx context.Context, tokenHash, old, new string) (bool, error) {
	return d.replaceSealed(ctx, &DeviceRefreshToken{}, "token_hash", tokenHash, "successor_sealed", old, new)
}

func (d *DB) replaceSealed(ctx context.Context, model any, keyCol, key, col, old, new string) (bool, error) {
	if old == "" || new == "" {
		return false, nil
	}
	res := d.gorm.WithContext(ctx).Model(model).Where(keyCol+" = ? AND "+col+" = ?", key, old).Update(col, new)
	return res.RowsAffected == 1, res.Error
}
