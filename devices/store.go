package devices

import "time"

// Records of migration 0002_devices. Times are stored in UTC.

// handoffCode is a one-time code the app trades for a device session.
type handoffCode struct {
	CodeHash       string `gorm:"column:code_hash;primaryKey"`
	ConnectionID   string `gorm:"column:connection_id"`
	Owner          string `gorm:"column:owner"`
	AppChallenge   string `gorm:"column:app_challenge"`
	AppRedirectURI string `gorm:"column:app_redirect_uri"`
	CreatedAt      time.Time
	ExpiresAt      time.Time
	UsedAt         *time.Time
}

func (handoffCode) TableName() string { return "handoff_codes" }

// deviceSession is one token family.
type deviceSession struct {
	ID            string `gorm:"column:id;primaryKey"`
	Owner         string `gorm:"column:owner"`
	DeviceLabel   string `gorm:"column:device_label"`
	Generation    int64  `gorm:"column:generation"`
	CreatedAt     time.Time
	LastUsedAt    time.Time
	IdleExpiresAt time.Time
	RevokedAt     *time.Time
	RevokeReason  string `gorm:"column:revoke_reason"`
}

func (deviceSession) TableName() string { return "device_sessions" }

// deviceRefreshToken is one generation of a session's refresh token.
type deviceRefreshToken struct {
	TokenHash  string `gorm:"column:token_hash;primaryKey"`
	SessionID  string `gorm:"column:session_id"`
	Generation int64  `gorm:"column:generation"`
	CreatedAt  time.Time
	RotatedAt  *time.Time
}

func (deviceRefreshToken) TableName() string { return "device_refresh_tokens" }

// signingKey is an Ed25519 key of access tokens; the private half is sealed.
type signingKey struct {
	Kid           string `gorm:"column:kid;primaryKey"`
	Alg           string `gorm:"column:alg"`
	PrivateSealed string `gorm:"column:private_sealed"`
	PublicKey     string `gorm:"column:public_key"`
	CreatedAt     time.Time
	RetiredAt     *time.Time
}

func (signingKey) TableName() string { return "signing_keys" }
