package devices

import (
	"context"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

// Store is what a Service needs of the database; *models.DB implements it.
// The records (models.HandoffCode, DeviceSession, DeviceRefreshToken,
// SigningKey) keep secrets only as their SHA-256 and private keys sealed.
type Store interface {
	// Handoff codes.
	CreateHandoffCode(ctx context.Context, c models.HandoffCode) error
	SpendHandoffCode(ctx context.Context, hash string, now time.Time) (code *models.HandoffCode, spentNow bool, err error)
	StartDeviceSessionFromHandoff(ctx context.Context, hash string, now time.Time,
		start func(models.HandoffCode) (s models.DeviceSession, refreshHash string, refusal error)) (connectionIDs []string, err error)

	// Sessions and their rotating refresh tokens.
	CreateDeviceSession(ctx context.Context, s models.DeviceSession, refreshHash string) error
	RotateDeviceRefreshToken(ctx context.Context, hash, nextHash string, now, idleExpiresAt time.Time, keep models.DeviceReuse) (*models.DeviceSession, string, error)
	RevokeDeviceFamily(ctx context.Context, tokenHash, reason string, now time.Time) error
	RevokeDeviceSession(ctx context.Context, id, reason string, now time.Time) error
	DeviceSessionForVerify(ctx context.Context, id string) (*models.DeviceSession, error)
	DeviceSessionOfRefreshToken(ctx context.Context, tokenHash string) (*models.DeviceSession, error)
	PurgeDeviceRecords(ctx context.Context, cutoff time.Time) (models.PurgedDevices, error)

	// Signing keys.
	ActiveSigningKeys(ctx context.Context, now time.Time) ([]models.SigningKey, error)
	AddFirstSigningKey(ctx context.Context, k models.SigningKey) (bool, error)
	AddNewestSigningKey(ctx context.Context, k models.SigningKey, retireOthersAt time.Time) error
	RetireSigningKey(ctx context.Context, kid string, now time.Time) error

	// Reseal (a seal key rotation): sealed values paged by primary key and
	// replaced by compare-and-swap.
	SigningKeysAfter(ctx context.Context, after string, n int) ([]models.SigningKey, error)
	ReplaceSealedSigningKey(ctx context.Context, kid, old, new string) (bool, error)
	KeptSuccessorsAfter(ctx context.Context, after string, n int) ([]models.DeviceRefreshToken, error)
	ReplaceSealedSuccessor(ctx context.Context, tokenHash, old, new string) (bool, error)
}
