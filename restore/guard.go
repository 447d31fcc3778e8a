// Package restore keeps a database restored from a backup from killing
// every Salesforce grant it holds (docs/RUNBOOK-RESTORE.md).
//
// A backup holds the refresh tokens of its time. Salesforce rotates a
// refresh token at every use, and presenting a rotated one is reuse: it
// revokes the whole chain. So after a restore, every token that was
// refreshed after the backup is stale, and the warmer would present each
// one.
//
// The Guard tells a restored database from the one the fleet last saw. The
// database carries an incarnation (a random ID made by its migration, which
// a backup carries along) and a point in its history, (epoch, generation),
// which only grows while it lives: every replica advances the generation
// periodically (compare-and-advance: never a database that is behind what
// this replica saw). Each replica remembers the highest point it saw of
// each incarnation, in memory and in a small file in its data directory.
// A database of a known incarnation behind that point went back in its
// history: it was restored. The replica then holds refreshes for the whole
// app (the restore state in the database, which every replica reads), marks
// every active connection's token unverified (no worker presents it before
// introspection shows it is live), records an event with its webhook and
// raises an alert telling the operator to run `tokenwarm restore`.
//
// Run is that procedure: it keeps refreshes held, introspects every active
// connection's stored token without presenting it (the vault's rule for an
// unknown outcome), marks the stale ones rotation_lost / needs_reauth,
// leaves those it could not verify marked (each is introspected again
// before its next refresh), and only then lifts the hold, moving the
// database to a new epoch.
package restore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/internal/text"
	"github.com/tokenwarm/tokenwarm/models"
)

// StateFile is the name of a replica's memory of the databases it saw, in
// its data directory.
const StateFile = "incarnation.json"

// GuardStore is what the guard reads and writes; *models.DB is one.
type GuardStore interface {
	ReadIncarnation(ctx context.Context) (*models.Incarnation, error)
	AdvanceGeneration(ctx context.Context, seen models.Mark) (*models.Incarnation, bool, error)
	HoldForRestore(ctx context.Context, seen models.Mark, detail string, ev models.Event) (bool, int64, error)
}

// Guard is one replica's watch over the database's history. It is a
// vault.Hold. Safe for concurrent use.
type Guard struct {
	store  GuardStore
	path   string // "" = memory only
	clock  clock.Clock
	log    *slog.Logger
	worker string

	// reason is why refreshes are held ("" = not held). Every refresh
	// reads it, so it is read without the lock a slow check may hold.
	reason atomic.Pointer[string]

	// mu serialises checks and guards what follows.
	mu        sync.Mutex
	seen      map[string]seenMark
	fileWarn  bool
	lastState string
}

// seenMark is a remembered point of an incarnation's history.
type seenMark struct {
	models.Mark
	SeenAt time.Time `json:"seen_at"`
}

type stateFile struct {
	Version      int                 `json:"version"`
	Incarnations map[string]seenMark `json:"incarnations"`
}

// maxRemembered bounds the incarnations a state file keeps (newest kept).
const maxRemembered = 16

// NewGuard builds a guard. dataDir "" keeps its memory in this process
// only. Until its first Check succeeds it holds refreshes: it does not yet
// know whether the database went back.
func NewGuard(store GuardStore, dataDir string, clk clock.Clock, log *slog.Logger, worker string) *Guard {
	if clk == nil {
		clk = clock.System{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{store: store, clock: clk, log: log.With("component", "restore-guard"), worker: worker, seen: map[string]seenMark{}}
	g.hold("the database's history has not been checked yet")
	if dataDir != "" {
		g.path = filepath.Join(dataDir, StateFile)
		g.load()
	}
	return g
}

// HoldReason is empty when refreshes may run (vault.Hold).
func (g *Guard) HoldReason() string { return *g.reason.Load() }

func (g *Guard) hold(reason string) { g.reason.Store(&reason) }

// Check compares the database with what this replica saw of it, advances
// its generation when it is not behind, and holds refreshes when it is (or
// when a restore is pending). Called at start-up, periodically and at
// shutdown. An error leaves the hold as it was.
func (g *Guard) Check(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur, err := g.store.ReadIncarnation(ctx)
	if err != nil {
		return fmt.Errorf("read the database's incarnation: %w", err)
	}
	for range 3 {
		m := cur.Mark()
		seen, known := g.seen[m.Incarnation]
		switch {
		case cur.RestoreState != models.RestoreNone:
			g.holdLocked(cur)
			return nil
		case known && m.Before(seen.Mark):
			return g.detectLocked(ctx, cur, seen)
		case !known:
			// First sight of this database: learn where it stands, but
			// do not advance it yet. A replica with no memory cannot tell
			// a restored database from the live one, and advancing would
			// hide the restore from every replica that can.
			g.rememberLocked(m)
			g.releaseLocked(cur)
			return nil
		}
		next, ok, err := g.store.AdvanceGeneration(ctx, m)
		if err != nil {
			return fmt.Errorf("advance the database's generation: %w", err)
		}
		if ok {
			g.rememberLocked(next.Mark())
			g.releaseLocked(next)
			return nil
		}
		// It moved meanwhile (a restore, a hold, a restore procedure
		// finishing): judge the row as it is now.
		cur = next
	}
	return errors.New("the database's incarnation kept changing; checking again later")
}

// detectLocked: the database is behind what this replica saw.
func (g *Guard) detectLocked(ctx context.Context, cur *models.Incarnation, seen seenMark) error {
	m := cur.Mark()
	detail := fmt.Sprintf("the database went back in its history: it is at epoch %d generation %d (%s), and replica %s saw epoch %d generation %d (%s) on %s; it was restored from a backup, and refresh tokens rotated since the backup are stale",
		m.Epoch, m.Generation, generationTime(m.Generation), g.worker, seen.Epoch, seen.Generation, generationTime(seen.Generation), seen.SeenAt.UTC().Format(time.RFC3339))
	ev := models.Event{Kind: models.EventRestoreDetected, Cause: "restore", Worker: g.worker, ErrorCode: "database_restored",
		Detail: text.Truncate("refreshes are held for the app until `tokenwarm restore` has run: "+detail, 300), CreatedAt: g.clock.Now().UTC()}
	recorded, marked, err := g.store.HoldForRestore(ctx, seen.Mark, detail, ev)
	if err != nil {
		// Hold anyway: this replica knows enough not to present.
		g.hold("the database was restored from a backup (run `tokenwarm restore`)")
		return fmt.Errorf("record the restore hold: %w", err)
	}
	if recorded {
		g.log.Error("ALERT: the database was restored from a backup: refreshes are held for the whole app and every active connection's token is marked unverified; run `tokenwarm restore` to verify every token (without presenting it) and resume",
			"database_epoch", m.Epoch, "database_generation", m.Generation, "database_generation_time", generationTime(m.Generation),
			"seen_epoch", seen.Epoch, "seen_generation", seen.Generation, "seen_generation_time", generationTime(seen.Generation),
			"connections_marked", marked)
	}
	now, err := g.store.ReadIncarnation(ctx)
	if err != nil {
		g.hold("the database was restored from a backup (run `tokenwarm restore`)")
		return err
	}
	if now.RestoreState != models.RestoreNone {
		g.holdLocked(now)
		return nil
	}
	// Not held, yet behind: someone lifted the hold meanwhile. Judge it
	// at the next check; hold until then.
	g.hold("the database was restored from a backup (run `tokenwarm restore`)")
	return nil
}

func (g *Guard) holdLocked(cur *models.Incarnation) {
	reason := "the database was restored from a backup; run `tokenwarm restore` to verify every refresh token and resume"
	if cur.RestoreState == models.RestoreRunning {
		reason = "`tokenwarm restore` is verifying every refresh token after a restore from a backup"
	}
	if g.lastState != cur.RestoreState {
		g.log.Error("ALERT: refreshes are held for the whole app: "+reason, "restore_state", cur.RestoreState, "detail", cur.RestoreDetail)
	}
	g.lastState = cur.RestoreState
	g.hold(reason)
}

func (g *Guard) releaseLocked(cur *models.Incarnation) {
	if g.lastState != "" {
		g.log.Info("refreshes resume: the restore procedure finished", "epoch", cur.Epoch)
	}
	g.lastState = ""
	g.hold("")
}

func (g *Guard) rememberLocked(m models.Mark) {
	if old, ok := g.seen[m.Incarnation]; ok && m.Before(old.Mark) {
		return
	}
	g.seen[m.Incarnation] = seenMark{Mark: m, SeenAt: g.clock.Now().UTC()}
	g.save()
}

// load reads the state file; a missing or unreadable one is no memory.
func (g *Guard) load() {
	b, err := os.ReadFile(g.path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var st stateFile
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil {
		g.log.Warn("cannot read the replica's memory of the database's history; starting without it (a restore from a backup cannot be detected by this replica)",
			"path", g.path, "err", err)
		return
	}
	for id, m := range st.Incarnations {
		m.Incarnation = id
		g.seen[id] = m
	}
}

// save writes the memory (merged with the file, which another process on
// this data directory may have written) atomically. A failure is logged
// once: the memory of this process still works.
func (g *Guard) save() {
	if g.path == "" {
		return
	}
	if b, err := os.ReadFile(g.path); err == nil {
		var st stateFile
		if json.Unmarshal(b, &st) == nil {
			for id, m := range st.Incarnations {
				m.Incarnation = id
				if cur, ok := g.seen[id]; !ok || cur.Mark.Before(m.Mark) {
					g.seen[id] = m
				}
			}
		}
	}
	ids := make([]string, 0, len(g.seen))
	for id := range g.seen {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return g.seen[ids[i]].SeenAt.After(g.seen[ids[j]].SeenAt) })
	st := stateFile{Version: 1, Incarnations: map[string]seenMark{}}
	for i, id := range ids {
		if i >= maxRemembered {
			delete(g.seen, id)
			continue
		}
		st.Incarnations[id] = g.seen[id]
	}
	err := writeAtomic(g.path, st)
	switch {
	case err != nil && !g.fileWarn:
		g.fileWarn = true
		g.log.Warn("cannot write the replica's memory of the database's history; it is kept in memory only, so a restore made while this replica is stopped cannot be detected by it",
			"path", g.path, "err", err)
	case err == nil && g.fileWarn:
		g.fileWarn = false
	}
}

func writeAtomic(path string, st stateFile) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), StateFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// generationTime renders a generation (the database's clock in
// microseconds when it was advanced) for people.
func generationTime(gen int64) string {
	if gen <= 0 {
		return "never advanced"
	}
	return time.UnixMicro(gen).UTC().Format(time.RFC3339)
}
