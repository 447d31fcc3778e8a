// Package models holds tokenwarm's records, their migrations and the code
// that opens the database (Postgres for replicas, embedded SQLite otherwise).
package models

import "time"

// Connection status values.
const (
	StatusActive      = "active"
	StatusNeedsReauth = "needs_reauth"
	StatusRevoked     = "revoked"
)

// Connection is one Salesforce grant: org × user × connected app. Its ID is
// stable for life, also across re-authorization. Token columns hold sealed
// values only (see package seal).
type Connection struct {
	ID                   string `gorm:"primaryKey"`
	Owner                string
	OrgID                string
	UserID               string
	LoginURL             string
	InstanceURL          string
	IdentityURL          string
	Scopes               string
	Status               string
	RefreshTokenSealed   string
	AccessTokenSealed    string
	AccessTokenIssuedAt  *time.Time
	AccessTokenExpiresAt *time.Time
	// LastRefreshedAt is the last successful refresh (or authorization); it
	// drives Salesforce's sliding idle TTL.
	LastRefreshedAt     time.Time
	NextWarmAt          time.Time
	RotationCount       int64
	ConsecutiveFailures int
	// NextAttemptAt holds back upstream calls after a failure (backoff).
	NextAttemptAt *time.Time
	LastErrorCode string
	LastErrorAt   *time.Time
	ReauthReason  string
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// TableName pins the table name.
func (Connection) TableName() string { return "connections" }

// Event kinds.
const (
	EventConnected               = "connected"
	EventRefreshed               = "refreshed"
	EventTransientFailure        = "transient_failure"
	EventConfigError             = "config_error"
	EventNeedsReauth             = "needs_reauth"
	EventConcurrentPresentation  = "concurrent_presentation"
	EventUnknownOutcome          = "unknown_outcome"
	EventCommitRetried           = "commit_retried"
	EventReauthorized            = "reauthorized"
	EventRevoked                 = "revoked"
	EventStaleAttemptInterrupted = "attempt_interrupted"
)

// Event is one line of a connection's audit trail. It never holds a token.
type Event struct {
	ID           int64 `gorm:"primaryKey"`
	ConnectionID *string
	Kind         string
	Cause        string
	Worker       string
	HTTPStatus   int `gorm:"column:http_status"`
	ErrorCode    string
	Detail       string
	CreatedAt    time.Time
}

// TableName pins the table name.
func (Event) TableName() string { return "events" }

// RefreshAttempt marks a refresh token as possibly presented. It is committed
// before the presentation and removed together with the stored result.
type RefreshAttempt struct {
	ConnectionID  string `gorm:"primaryKey"`
	AttemptID     string
	Worker        string
	RotationCount int64
	StartedAt     time.Time
	LeaseUntil    time.Time
}

// TableName pins the table name.
func (RefreshAttempt) TableName() string { return "refresh_attempts" }
