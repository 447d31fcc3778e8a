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
	// Who the grant belongs to, for operators (personal data; empty when
	// capture is off, failed, or was erased). Never a token.
	UserName     string
	UserUsername string
	UserEmail    string
	OrgName      string
	// AuthorizedAt is the last connect or re-authorization: an org's
	// "expire refresh token after N" policy counts from it.
	AuthorizedAt *time.Time
	CreatedAt    time.Time
	UpdatedAt    time.Time
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
	// EventRotationLost: introspection showed that the token we hold was
	// rotated by a presentation whose answer never reached storage. It is
	// never presented; the connection needs re-authorization.
	EventRotationLost = "rotation_lost"
	// EventIntrospectionFailed: the state of a token whose last
	// presentation has an unknown outcome could not be learned; it is held
	// back and asked about again later.
	EventIntrospectionFailed = "introspection_failed"
	// EventAttemptUnresolved: a connection has been held back by an
	// unresolved attempt for long; an operator should look.
	EventAttemptUnresolved = "attempt_unresolved"
	// EventRestricted: Salesforce answered "IP restricted or invalid login
	// hours" for this connection. Several connections within a short window
	// make it an app-wide configuration error.
	EventRestricted = "restricted"
	// EventUnrecognized: an answer tokenwarm has no rule for; the
	// connection is backed off, never marked dead.
	EventUnrecognized = "unrecognized_error"
	// EventReauthSoon: the connection's grant reaches the org's refresh
	// token maximum age soon (SALESFORCE_REFRESH_MAX_AGE); the user should
	// re-authorize before it does. Once per authorization.
	EventReauthSoon = "reauth_soon"
	// EventIdentityErased: an admin erased the user's personal data.
	EventIdentityErased = "identity_erased"
)

// ReasonRotationLost prefixes the re-auth reason of a connection whose
// rotation was lost (see EventRotationLost).
const ReasonRotationLost = "rotation_lost"

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
	// Person is not stored: with AnnouncePeople, the announcer gets the
	// event's connection's Person in it.
	Person *Person `gorm:"-"`
}

// TableName pins the table name.
func (Event) TableName() string { return "events" }

// RefreshProtocol is the version of the refresh protocol this binary
// speaks. Attempt markers carry it, and the database refuses markers of
// older protocols, so a binary that predates a protocol change cannot
// present a token while newer replicas run.
const RefreshProtocol = 2

// Attempt marker states.
const (
	// AttemptPresenting: a worker owns the token until LeaseUntil (the
	// database's clock); it may be presenting it right now.
	AttemptPresenting = "presenting"
	// AttemptUnresolved: a presentation's outcome is unknown (the answer
	// was lost or made no sense); before the token is presented again,
	// introspection must show it is still active.
	AttemptUnresolved = "unresolved"
)

// RefreshAttempt marks a refresh token as possibly presented. It is committed
// before the presentation and removed together with the stored result. A
// marker that outlives its lease, or is unresolved, means the token may have
// been rotated by a presentation whose answer we never stored.
type RefreshAttempt struct {
	ConnectionID  string `gorm:"primaryKey"`
	AttemptID     string
	Worker        string
	RotationCount int64
	StartedAt     time.Time
	LeaseUntil    time.Time
	Protocol      int
	State         string
	// AlertedAt is set once an operator was alerted that the connection is
	// held back by this marker.
	AlertedAt *time.Time
}

// TableName pins the table name.
func (RefreshAttempt) TableName() string { return "refresh_attempts" }
