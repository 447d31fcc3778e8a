package models

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"
)

// AdminKey is an admin API key as stored: only the key's SHA-256, never the
// key (package adminkeys).
type AdminKey struct {
	ID         string `gorm:"primaryKey"`
	Name       string
	KeyHash    string
	Prefix     string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// TableName pins the table name.
func (AdminKey) TableName() string { return "admin_keys" }

// ErrAdminKeyNameTaken: an admin key with that name exists (revoked keys
// keep their name).
var ErrAdminKeyNameTaken = errors.New("models: admin key name taken")

// CreateAdminKey stores k unless a key of the same name exists
// (ErrAdminKeyNameTaken).
func (d *DB) CreateAdminKey(ctx context.Context, k AdminKey) error {
	return d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var n int64
		if err := tx.Model(&AdminKey{}).Where("name = ?", k.Name).Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return ErrAdminKeyNameTaken
		}
		return tx.Create(&k).Error
	})
}

// AdminKeyByHash returns the key, revoked or not, whose SHA-256 is hash, or
// ErrNotFound. An idempotent read: retried once on a fresh connection when
// the database dropped it (RetryRead), so a restart does not fail requests.
func (d *DB) AdminKeyByHash(ctx context.Context, hash string) (*AdminKey, error) {
	var k AdminKey
	err := d.RetryRead(ctx, func() error {
		k = AdminKey{}
		return d.gorm.WithContext(ctx).Where("key_hash = ?", hash).Take(&k).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &k, nil
}

// TouchAdminKey sets the key's last use to now unless it was already used
// after usedBefore: a burst of requests writes once.
func (d *DB) TouchAdminKey(ctx context.Context, id string, now, usedBefore time.Time) error {
	return d.gorm.WithContext(ctx).Model(&AdminKey{}).
		Where("id = ? AND (last_used_at IS NULL OR last_used_at <= ?)", id, usedBefore.UTC()).
		Update("last_used_at", now.UTC()).Error
}

// RevokeAdminKey revokes the key named name at now. A revoked key stays
// revoked (the first time is kept); ErrNotFound when no key has that name.
func (d *DB) RevokeAdminKey(ctx context.Context, name string, now time.Time) error {
	g := d.gorm.WithContext(ctx)
	res := g.Model(&AdminKey{}).Where("name = ? AND revoked_at IS NULL", name).Update("revoked_at", now.UTC())
	if res.Error != nil {
		return res.Error
	}
	if res.RowsAffected > 0 {
		return nil
	}
	var n int64
	if err := g.Model(&AdminKey{}).Where("name = ?", name).Count(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// LiveAdminKey returns the key with this ID if it is not revoked, else
// ErrNotFound. Retried once like AdminKeyByHash.
func (d *DB) LiveAdminKey(ctx context.Context, id string) (*AdminKey, error) {
	var ks []AdminKey
	err := d.RetryRead(ctx, func() error {
		ks = nil
		return d.gorm.WithContext(ctx).Where("id = ? AND revoked_at IS NULL", id).Limit(1).Find(&ks).Error
	})
	if err != nil {
		return nil, err
	}
	if len(ks) == 0 {
		return nil, ErrNotFound
	}
	return &ks[0], nil
}

// ListAdminKeys returns every admin key, revoked ones included, oldest
// first.
func (d *DB) ListAdminKeys(ctx context.Context) ([]AdminKey, error) {
	var ks []AdminKey
	if err := d.gorm.WithContext(ctx).Order("created_at, name").Find(&ks).Error; err != nil {
		return nil, err
	}
	return ks, nil
}
