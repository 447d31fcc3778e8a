package devices

import (
	"context"
	"time"

	"gorm.io/gorm"
)

// Purged counts what Purge deleted.
type Purged struct {
	HandoffCodes, Sessions, RotatedTokens int64
}

// Purge deletes what can no longer be used and is older than cutoff:
// handoff codes that expired, device sessions revoked or idle-expired
// (with their tokens), and rotated refresh tokens of live sessions.
//
// A rotated token is kept until cutoff so that its reuse still revokes the
// family: reuse detection matters in the minutes after a token leaks, not
// a month later, and a purged token is refused all the same (unknown).
func (s *Service) Purge(ctx context.Context, cutoff time.Time) (Purged, error) {
	cutoff = cutoff.UTC()
	var p Purged
	err := s.db.Gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		res := tx.Where("expires_at < ?", cutoff).Delete(&handoffCode{})
		if res.Error != nil {
			return res.Error
		}
		p.HandoffCodes = res.RowsAffected
		dead := tx.Model(&deviceSession{}).Select("id").Where("revoked_at < ? OR idle_expires_at < ?", cutoff, cutoff)
		res = tx.Where("session_id IN (?)", dead).Delete(&deviceRefreshToken{})
		if res.Error != nil {
			return res.Error
		}
		res = tx.Where("revoked_at < ? OR idle_expires_at < ?", cutoff, cutoff).Delete(&deviceSession{})
		if res.Error != nil {
			return res.Error
		}
		p.Sessions = res.RowsAffected
		res = tx.Where("rotated_at < ?", cutoff).Delete(&deviceRefreshToken{})
		p.RotatedTokens = res.RowsAffected
		return res.Error
	})
	return p, err
}
