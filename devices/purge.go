package devices

import (
	"context"
	"time"

	"github.com/tokenwarm/tokenwarm/models"
)

// Purged counts what Purge deleted.
type Purged = models.PurgedDevices

// Purge deletes what can no longer be used and is older than cutoff:
// handoff codes that expired, device sessions revoked or idle-expired
// (with their tokens), and rotated refresh tokens of live sessions.
//
// A rotated token is kept until cutoff so that its reuse still revokes the
// family: reuse detection matters in the minutes after a token leaks, not
// a month later, and a purged token is refused all the same (unknown).
func (s *Service) Purge(ctx context.Context, cutoff time.Time) (Purged, error) {
	return s.db.PurgeDeviceRecords(ctx, cutoff)
}
