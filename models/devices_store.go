package models

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Records of migration 0002_devices (package devices). Times are stored in
// UTC; secrets only as their SHA-256, private keys sealed.

// HandoffCode is a one-time code the app trades for a device session.
type HandoffCode struct {
	CodeHash       string `gorm:"column:code_hash;primaryKey"`
	ConnectionID   string `gorm:"column:connection_id"`
	Owner          string `gorm:"column:owner"`
	AppChallenge   string `gorm:"column:app_challenge"`
	AppRedirectURI string `gorm:"column:app_redirect_uri"`
	// ClientID is the app client the code was issued to (migration
	// 0008); empty for the legacy flow.
	ClientID  string `gorm:"column:client_id"`
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    *time.Time
}

// TableName pins the table name.
func (HandoffCode) TableName() string { return "handoff_codes" }

// DeviceSession is one token family of a device.
type DeviceSession struct {
	ID            string `gorm:"column:id;primaryKey"`
	Owner         string `gorm:"column:owner"`
	DeviceLabel   string `gorm:"column:device_label"`
	Generation    int64  `gorm:"column:generation"`
	CreatedAt     time.Time
	LastUsedAt    time.Time
	IdleExpiresAt time.Time
	RevokedAt     *time.Time
	RevokeReason  string `gorm:"column:revoke_reason"`
	// ClientID is the app client the session was started by (migration
	// 0008); empty for the legacy flow.
	ClientID string `gorm:"column:client_id"`
}

// TableName pins the table name.
func (DeviceSession) TableName() string { return "device_sessions" }

// DeviceRefreshToken is one generation of a session's refresh token.
type DeviceRefreshToken struct {
	TokenHash  string `gorm:"column:token_hash;primaryKey"`
	SessionID  string `gorm:"column:session_id"`
	Generation int64  `gorm:"column:generation"`
	CreatedAt  time.Time
	RotatedAt  *time.Time
	// SuccessorSealed is the token's successor, sealed, kept until
	// ReuseUntil so that a retry of this token gets it again (the reuse
	// interval, migration 0009); empty when none is kept.
	SuccessorSealed string     `gorm:"column:successor_sealed"`
	ReuseUntil      *time.Time `gorm:"column:reuse_until"`
}

// TableName pins the table name.
func (DeviceRefreshToken) TableName() string { return "device_refresh_tokens" }

// DeviceReuse asks RotateDeviceRefreshToken to keep the successor for a
// retry of the spent token: sealed by Seal, until Until. The zero value
// keeps nothing (no reuse interval).
type DeviceReuse struct {
	Until time.Time
	// Seal seals the successor for the session and generation it belongs
	// to; it must not return the plaintext in its error.
	Seal func(sessionID string, generation int64) (string, error)
}

// SigningKey is an Ed25519 key of device access tokens; the private half is
// sealed.
type SigningKey struct {
	Kid           string `gorm:"column:kid;primaryKey"`
	Alg           string `gorm:"column:alg"`
	PrivateSealed string `gorm:"column:private_sealed"`
	PublicKey     string `gorm:"column:public_key"`
	CreatedAt     time.Time
	RetiredAt     *time.Time
}

// TableName pins the table name.
func (SigningKey) TableName() string { return "signing_keys" }

// Reasons recorded on revoked device sessions by the operations here.
const (
	DeviceRevokedReuse       = "refresh token reuse"
	DeviceRevokedIdleExpired = "idle expired"
)

// Refusals of RotateDeviceRefreshToken. A refusal that revoked the session
// (reuse, idle expiry) is committed before it is returned.
var (
	// ErrDeviceTokenReuse: the token was already rotated (or lost a race
	// against another presentation of it); its session is now revoked.
	ErrDeviceTokenReuse = errors.New("models: device refresh token reuse")
	// ErrDeviceSessionRevoked: the token's session was revoked before.
	ErrDeviceSessionRevoked = errors.New("models: device session revoked")
	// ErrDeviceSessionExpired: the session was idle past its expiry; it is
	// now revoked.
	ErrDeviceSessionExpired = errors.New("models: device session expired")
	// ErrHandoffCodeUsed: the handoff code was spent before.
	ErrHandoffCodeUsed = errors.New("models: handoff code already used")
	// ErrSigningKeyInUse: the newest signing key signs and cannot be
	// retired; rotate first.
	ErrSigningKeyInUse = errors.New("models: signing key in use")
)

// signingKeysLock serialises signing-key changes of replicas (a Postgres
// advisory lock; migrations use 7216000001).
const signingKeysLock = 7216000002

// CreateHandoffCode stores a handoff code.
func (d *DB) CreateHandoffCode(ctx context.Context, c HandoffCode) error {
	return d.gorm.WithContext(ctx).Create(&c).Error
}

// SpendHandoffCode marks the code of hash used at now and returns it, with
// spentNow true when this call spent it (exactly one call ever does) and
// false when it was spent before. An unknown code is ErrNotFound. Once the
// code is spent, the read that follows is retried once on a fresh
// connection (RetryRead): its failure must not cost the user the code.
func (d *DB) SpendHandoffCode(ctx context.Context, hash string, now time.Time) (code *HandoffCode, spentNow bool, err error) {
	g := d.gorm.WithContext(ctx)
	res := g.Model(&HandoffCode{}).Where("code_hash = ? AND used_at IS NULL", hash).Update("used_at", now.UTC())
	if res.Error != nil {
		return nil, false, res.Error
	}
	var c HandoffCode
	err = d.RetryRead(ctx, func() error {
		c = HandoffCode{}
		return g.Where("code_hash = ?", hash).Take(&c).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, false, ErrNotFound
	}
	if err != nil {
		return nil, false, err
	}
	return &c, res.RowsAffected == 1, nil
}

// CreateDeviceSession stores a session and its first refresh token (of the
// session's generation) in one transaction.
func (d *DB) CreateDeviceSession(ctx context.Context, s DeviceSession, refreshHash string) error {
	return d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		return createDeviceSession(tx, s, refreshHash)
	})
}

func createDeviceSession(tx *gorm.DB, s DeviceSession, refreshHash string) error {
	if err := tx.Create(&s).Error; err != nil {
		return err
	}
	return tx.Create(&DeviceRefreshToken{TokenHash: refreshHash, SessionID: s.ID, Generation: s.Generation, CreatedAt: s.CreatedAt}).Error
}

// StartDeviceSessionFromHandoff spends the handoff code of hash at now
// and stores the session it starts, in one transaction: a session that
// cannot be stored leaves the code unspent, so a failure of ours never
// costs the user the code. start judges the code (expiry, verifier,
// client, redirect URI) and returns the session with the hash of its first
// refresh token, or a refusal; a refusal is returned after the spend is
// committed (every attempt spends the code, a failed one included). start
// runs inside the transaction and must not use the database. It returns
// the IDs of the owner's connections (ConnectionsOf's order), read in the
// same transaction, so nothing that can fail is left between the commit and
// the answer that hands the session over.
//
// An unknown code is ErrNotFound; one spent before ErrHandoffCodeUsed. Of
// racing redemptions across replicas exactly one spends the code: the
// conditional update decides, and a loser that waited for a rolled-back
// winner spends it itself.
func (d *DB) StartDeviceSessionFromHandoff(ctx context.Context, hash string, now time.Time,
	start func(HandoffCode) (s DeviceSession, refreshHash string, refusal error)) (connectionIDs []string, err error) {
	var refusal error
	err = d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		refusal, connectionIDs = nil, nil
		res := tx.Model(&HandoffCode{}).Where("code_hash = ? AND used_at IS NULL", hash).Update("used_at", now.UTC())
		if res.Error != nil {
			return res.Error
		}
		var c HandoffCode
		err := tx.Where("code_hash = ?", hash).Take(&c).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			refusal = ErrNotFound
			return nil
		}
		if err != nil {
			return err
		}
		if res.RowsAffected != 1 {
			refusal = ErrHandoffCodeUsed
			return nil
		}
		s, refreshHash, err := start(c)
		if err != nil {
			refusal = err
			return nil
		}
		if err := createDeviceSession(tx, s, refreshHash); err != nil {
			return err
		}
		return tx.Model(&Connection{}).Where("owner = ?", s.Owner).Order("created_at, id").Pluck("id", &connectionIDs).Error
	})
	if err != nil {
		return nil, err
	}
	if refusal != nil {
		return nil, refusal
	}
	return connectionIDs, nil
}

// DeviceSessionOfRefreshToken returns the session of a refresh token,
// current or rotated (its ID, owner, client and revocation), or
// ErrNotFound.
func (d *DB) DeviceSessionOfRefreshToken(ctx context.Context, tokenHash string) (*DeviceSession, error) {
	var s DeviceSession
	err := d.gorm.WithContext(ctx).Select("id", "owner", "client_id", "revoked_at").
		Where("id = (?)", d.gorm.Model(&DeviceRefreshToken{}).Select("session_id").Where("token_hash = ?", tokenHash)).Take(&s).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// RotateDeviceRefreshToken spends the refresh token of hash and stores
// nextHash as its successor, in one read-modify-write transaction: the
// session moves to the next generation, and its idle expiry to
// idleExpiresAt. It returns the session as updated.
//
// Of several presentations of one token exactly one rotates it, across
// pools and replicas: refreshes of a session queue on its row lock
// (Postgres; SQLite transactions hold the only writer), and conditional
// updates decide even without the lock. Every other presentation is reuse:
// it revokes the session (ErrDeviceTokenReuse). An unknown token is
// ErrNotFound; a revoked session ErrDeviceSessionRevoked; a session idle
// past its expiry is revoked (ErrDeviceSessionExpired). Revocations are
// committed before the refusal is returned.
//
// With keep, the spent token keeps its successor sealed until keep.Until,
// and every older kept successor of the session is erased (its successor,
// the token spent now, is used). A later presentation of the spent token
// is then not reuse while it is the immediate predecessor of the session's
// current token, that token is unused (the session is still at its
// generation), and keep.Until has not passed: it changes nothing and
// returns the session and the kept successor, sealed. The
// decision is made under the session's lock, so it sees every committed
// rotation: a retry racing the successor's first use either comes first
// and gets the successor, or comes second and is reuse.
func (d *DB) RotateDeviceRefreshToken(ctx context.Context, hash, nextHash string, now, idleExpiresAt time.Time, keep DeviceReuse) (*DeviceSession, string, error) {
	now, idleExpiresAt = now.UTC(), idleExpiresAt.UTC()
	var out *DeviceSession
	var reissued string
	var refusal error
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		out, reissued, refusal = nil, "", nil
		var tok DeviceRefreshToken
		err := tx.Where("token_hash = ?", hash).Take(&tok).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			refusal = ErrNotFound
			return nil
		}
		if err != nil {
			return err
		}
		// NO KEY UPDATE, not UPDATE, so inserting a child token does not
		// wait for it.
		q := tx.Where("id = ?", tok.SessionID)
		if d.Dialect == Postgres {
			q = q.Clauses(clause.Locking{Strength: "NO KEY UPDATE"})
		}
		var sess DeviceSession
		if err := q.Take(&sess).Error; err != nil {
			return err
		}
		// Read again under the lock: the winner of a race has rotated it.
		if err := tx.Where("token_hash = ?", hash).Take(&tok).Error; err != nil {
			return err
		}
		reuse := func() error {
			refusal = ErrDeviceTokenReuse
			_, err := revokeDeviceSession(tx, sess.ID, DeviceRevokedReuse, now)
			return err
		}
		switch {
		case tok.RotatedAt != nil && successorReissuable(&tok, &sess, now):
			reissued, out = tok.SuccessorSealed, &sess
			return nil
		case tok.RotatedAt != nil:
			return reuse()
		case sess.RevokedAt != nil:
			refusal = ErrDeviceSessionRevoked
			return nil
		case !now.Before(sess.IdleExpiresAt):
			refusal = ErrDeviceSessionExpired
			_, err := revokeDeviceSession(tx, sess.ID, DeviceRevokedIdleExpired, now)
			return err
		}
		next := tok.Generation + 1
		spend := map[string]any{"rotated_at": now}
		if !keep.Until.IsZero() {
			sealed, err := keep.Seal(sess.ID, next)
			if err != nil {
				return err
			}
			spend["successor_sealed"], spend["reuse_until"] = sealed, keep.Until.UTC()
		}
		// The token spent now was the kept successor of its predecessor:
		// used, so erased (with any older one).
		if err := eraseKeptSuccessors(tx.Where("session_id = ?", sess.ID)); err != nil {
			return err
		}
		res := tx.Model(&DeviceRefreshToken{}).Where("token_hash = ? AND rotated_at IS NULL", hash).Updates(spend)
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return reuse()
		}
		res = tx.Model(&DeviceSession{}).Where("id = ? AND generation = ? AND revoked_at IS NULL", sess.ID, tok.Generation).
			Updates(map[string]any{"generation": next, "last_used_at": now, "idle_expires_at": idleExpiresAt})
		if res.Error != nil {
			return res.Error
		}
		if res.RowsAffected != 1 {
			return reuse()
		}
		if err := tx.Create(&DeviceRefreshToken{TokenHash: nextHash, SessionID: sess.ID, Generation: next, CreatedAt: now}).Error; err != nil {
			return err
		}
		sess.Generation, sess.LastUsedAt, sess.IdleExpiresAt = next, now, idleExpiresAt
		out = &sess
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if refusal != nil {
		return nil, "", refusal
	}
	return out, reissued, nil
}

// successorReissuable reports whether the rotated token tok may hand out
// its kept successor again: it keeps one, its reuse interval runs, and the
// successor is the session's current, unused token (the session is one
// generation on: every rotation moves it, in the transaction that spends
// the token) of a live session.
func successorReissuable(tok *DeviceRefreshToken, sess *DeviceSession, now time.Time) bool {
	return tok.SuccessorSealed != "" && tok.ReuseUntil != nil && now.Before(*tok.ReuseUntil) &&
		sess.Generation == tok.Generation+1 && sess.RevokedAt == nil && now.Before(sess.IdleExpiresAt)
}

// eraseKeptSuccessors erases the kept successors of the tokens scope
// selects.
func eraseKeptSuccessors(scope *gorm.DB) error {
	return scope.Model(&DeviceRefreshToken{}).Where("reuse_until IS NOT NULL").
		Updates(map[string]any{"successor_sealed": "", "reuse_until": nil}).Error
}

// EraseExpiredDeviceSuccessors erases the kept successors whose reuse
// interval has passed by now (they can no longer be handed out; the
// housekeeping job sweeps them) and returns how many.
func (d *DB) EraseExpiredDeviceSuccessors(ctx context.Context, now time.Time) (int64, error) {
	res := d.gorm.WithContext(ctx).Model(&DeviceRefreshToken{}).Where("reuse_until <= ?", now.UTC()).
		Updates(map[string]any{"successor_sealed": "", "reuse_until": nil})
	return res.RowsAffected, res.Error
}

// RevokeDeviceFamily revokes the session of a refresh token, current or
// rotated (the whole token family), unless it already is revoked (the
// first reason is kept). An unknown token is ErrNotFound.
func (d *DB) RevokeDeviceFamily(ctx context.Context, tokenHash, reason string, now time.Time) error {
	g := d.gorm.WithContext(ctx)
	var tok DeviceRefreshToken
	err := g.Where("token_hash = ?", tokenHash).Take(&tok).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	_, err = revokeDeviceSession(g, tok.SessionID, reason, now.UTC())
	return err
}

// RevokeDeviceSession revokes a session unless it already is revoked (the
// first reason is kept). An unknown session is ErrNotFound.
func (d *DB) RevokeDeviceSession(ctx context.Context, id, reason string, now time.Time) error {
	g := d.gorm.WithContext(ctx)
	revoked, err := revokeDeviceSession(g, id, reason, now.UTC())
	if err != nil || revoked {
		return err
	}
	var n int64
	if err := g.Model(&DeviceSession{}).Where("id = ?", id).Count(&n).Error; err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// revokeDeviceSession revokes a session unless it already is, and reports
// whether it did. A successor kept for a retry is erased with it.
func revokeDeviceSession(db *gorm.DB, id, reason string, now time.Time) (bool, error) {
	res := db.Model(&DeviceSession{}).Where("id = ? AND revoked_at IS NULL", id).
		Updates(map[string]any{"revoked_at": now, "revoke_reason": reason})
	if res.Error != nil || res.RowsAffected != 1 {
		return false, res.Error
	}
	return true, eraseKeptSuccessors(db.Where("session_id = ?", id))
}

// DeviceSessionForVerify returns what verifying an access token needs of
// its session (ID, owner, client, revocation), or ErrNotFound. An idempotent read:
// retried once on a fresh connection when the database dropped it
// (RetryRead), so a database restart does not fail requests.
func (d *DB) DeviceSessionForVerify(ctx context.Context, id string) (*DeviceSession, error) {
	var s DeviceSession
	err := d.RetryRead(ctx, func() error {
		s = DeviceSession{}
		return d.gorm.WithContext(ctx).Select("id", "owner", "client_id", "revoked_at").Where("id = ?", id).Take(&s).Error
	})
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// PurgedDevices counts what PurgeDeviceRecords deleted.
type PurgedDevices struct {
	HandoffCodes, Sessions, RotatedTokens int64
}

// PurgeDeviceRecords deletes, in one transaction, what can no longer be
// used and is older than cutoff: handoff codes that expired, device
// sessions revoked or idle-expired (with their tokens), and rotated
// refresh tokens of live sessions.
func (d *DB) PurgeDeviceRecords(ctx context.Context, cutoff time.Time) (PurgedDevices, error) {
	cutoff = cutoff.UTC()
	var p PurgedDevices
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		p = PurgedDevices{}
		res := tx.Where("expires_at < ?", cutoff).Delete(&HandoffCode{})
		if res.Error != nil {
			return res.Error
		}
		p.HandoffCodes = res.RowsAffected
		dead := tx.Model(&DeviceSession{}).Select("id").Where("revoked_at < ? OR idle_expires_at < ?", cutoff, cutoff)
		res = tx.Where("session_id IN (?)", dead).Delete(&DeviceRefreshToken{})
		if res.Error != nil {
			return res.Error
		}
		res = tx.Where("revoked_at < ? OR idle_expires_at < ?", cutoff, cutoff).Delete(&DeviceSession{})
		if res.Error != nil {
			return res.Error
		}
		p.Sessions = res.RowsAffected
		res = tx.Where("rotated_at < ?", cutoff).Delete(&DeviceRefreshToken{})
		p.RotatedTokens = res.RowsAffected
		return res.Error
	})
	return p, err
}

// ActiveSigningKeys returns the signing keys not retired at now (a key's
// retirement may be scheduled ahead), newest first (NewestSigningKeyFirst).
func (d *DB) ActiveSigningKeys(ctx context.Context, now time.Time) ([]SigningKey, error) {
	var keys []SigningKey
	if err := d.gorm.WithContext(ctx).Where(activeSigningKey, now.UTC()).Find(&keys).Error; err != nil {
		return nil, err
	}
	slices.SortFunc(keys, NewestSigningKeyFirst)
	return keys, nil
}

// NewestSigningKeyFirst orders signing keys newest first: the most recently
// created, ties broken by kid (descending), so that every replica picks the
// same key to sign with.
func NewestSigningKeyFirst(a, b SigningKey) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(b.Kid, a.Kid)
}

// activeSigningKey selects the signing keys not retired at a time.
const activeSigningKey = "(retired_at IS NULL OR retired_at > ?)"

// lockSigningKeys takes the signing-key lock for the rest of tx (Postgres;
// on SQLite the transaction holds the only writer).
func (d *DB) lockSigningKeys(tx *gorm.DB) error {
	if d.Dialect != Postgres {
		return nil
	}
	return tx.Exec("SELECT pg_advisory_xact_lock(?)", signingKeysLock).Error
}

// AddFirstSigningKey stores k unless a signing key is active, and reports
// whether it did. Replicas starting together store one key between them.
func (d *DB) AddFirstSigningKey(ctx context.Context, k SigningKey) (bool, error) {
	added := false
	err := d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		added = false
		if err := d.lockSigningKeys(tx); err != nil {
			return err
		}
		var n int64
		if err := tx.Model(&SigningKey{}).Where("retired_at IS NULL").Count(&n).Error; err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		k.CreatedAt = k.CreatedAt.UTC()
		res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&k)
		added = res.RowsAffected == 1
		return res.Error
	})
	return added, err
}

// AddNewestSigningKey stores k as the newest signing key, the one that
// signs from now on: created at k.CreatedAt, or just after the newest key
// when the clock has not moved past it. Unless retireOthersAt is zero,
// every other key still active then is retired at retireOthersAt (a key
// retired earlier keeps its time).
func (d *DB) AddNewestSigningKey(ctx context.Context, k SigningKey, retireOthersAt time.Time) error {
	return d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := d.lockSigningKeys(tx); err != nil {
			return err
		}
		var all []SigningKey
		if err := tx.Find(&all).Error; err != nil {
			return err
		}
		created := k.CreatedAt.UTC()
		for _, o := range all {
			if !created.After(o.CreatedAt) {
				created = o.CreatedAt.UTC().Add(time.Microsecond)
			}
		}
		k.CreatedAt = created
		if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&k).Error; err != nil {
			return err
		}
		if retireOthersAt.IsZero() {
			return nil
		}
		at := retireOthersAt.UTC()
		return tx.Model(&SigningKey{}).Where("kid <> ?", k.Kid).Where(activeSigningKey, at).Update("retired_at", at).Error
	})
}

// RetireSigningKey stops the key kid from verifying, at now (also one whose
// retirement was scheduled later). The newest active key signs and cannot
// be retired (ErrSigningKeyInUse); an unknown kid is ErrNotFound; a
// retired one stays retired.
func (d *DB) RetireSigningKey(ctx context.Context, kid string, now time.Time) error {
	return d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := d.lockSigningKeys(tx); err != nil {
			return err
		}
		var active []SigningKey
		if err := tx.Where(activeSigningKey, now.UTC()).Find(&active).Error; err != nil {
			return err
		}
		if !slices.ContainsFunc(active, func(k SigningKey) bool { return k.Kid == kid }) {
			var n int64
			if err := tx.Model(&SigningKey{}).Where("kid = ?", kid).Count(&n).Error; err != nil {
				return err
			}
			if n == 0 {
				return ErrNotFound
			}
			return nil // already retired
		}
		if slices.MinFunc(active, NewestSigningKeyFirst).Kid == kid {
			return ErrSigningKeyInUse
		}
		return tx.Model(&SigningKey{}).Where("kid = ?", kid).Where(activeSigningKey, now.UTC()).Update("retired_at", now.UTC()).Error
	})
}

// connectionForSessionSQL is the pull's one statement through gorm
// (SQLite; parameters: the connection ID, the session ID): two primary-key
// lookups, reading the connection's pullColumns only.
var connectionForSessionSQL = `SELECT c.` + strings.Join(pullColumns, ", c.") + `, s.owner AS session_owner, s.revoked_at AS session_revoked_at
			FROM device_sessions s LEFT JOIN connections c ON c.id = ? WHERE s.id = ?`

// ConnectionForSession reads, in one statement, a device session (its
// owner and revocation) and a connection: what a token pull needs, so a
// pull of a valid token costs one round trip. sess is nil for an unknown
// session; conn is nil for an unknown connection.
//
// conn carries only the columns a pull of a valid token uses (pullColumns:
// its identity, owner and status, and the access token with its times);
// every other field is zero. Notably it never holds the sealed refresh
// token. Whatever needs more reads the row again, as a refresh does under
// its lock.
func (d *DB) ConnectionForSession(ctx context.Context, sessionID, connectionID string) (sess *DeviceSession, conn *Connection, err error) {
	read := d.connectionForSessionGorm
	if d.Dialect == Postgres {
		read = d.connectionForSessionPG
	}
	err = d.RetryRead(ctx, func() error {
		var err error
		sess, conn, err = read(ctx, sessionID, connectionID)
		return err
	})
	return sess, conn, err
}

// connectionForSessionGorm is ConnectionForSession through gorm (SQLite).
func (d *DB) connectionForSessionGorm(ctx context.Context, sessionID, connectionID string) (sess *DeviceSession, conn *Connection, err error) {
	var rows []struct {
		Connection       `gorm:"embedded"`
		SessionOwner     string
		SessionRevokedAt *time.Time
	}
	err = d.gorm.WithContext(ctx).Raw(connectionForSessionSQL, connectionID, sessionID).Find(&rows).Error
	if err != nil || len(rows) == 0 {
		return nil, nil, err
	}
	r := rows[0]
	sess = &DeviceSession{ID: sessionID, Owner: r.SessionOwner, RevokedAt: r.SessionRevokedAt}
	if r.Connection.ID != "" {
		c := r.Connection
		conn = &c
	}
	return sess, conn, nil
}
