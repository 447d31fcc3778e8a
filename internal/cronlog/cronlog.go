// Package cronlog sends robfig/cron's messages to slog.
package cronlog

import (
	"log/slog"

	"github.com/robfig/cron/v3"
)

// New returns a cron.Logger writing to log: cron's chatter at debug, its
// errors (a recovered panic, a skipped run) at error.
func New(log *slog.Logger) cron.Logger { return logger{log} }

type logger struct{ log *slog.Logger }

func (l logger) Info(msg string, kv ...any) { l.log.Debug("cron: "+msg, kv...) }

func (l logger) Error(err error, msg string, kv ...any) {
	l.log.Error("cron: "+msg, append(kv, "err", err)...)
}
