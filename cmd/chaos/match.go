package main

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tokenwarm/tokenwarm/emulator"
)

// Why a rotation may explain a rotation_lost connection.
const (
	candDropped     = emulator.LostDropped    // the emulator dropped the answer
	candClientGone  = emulator.LostClientGone // the replica went away before the answer
	candKilledAfter = "killed_around_answer"  // its replica was SIGKILLed while the request was in flight or before it could commit
)

// kill is one SIGKILL of a replica.
type kill struct {
	replica int
	at      time.Time
}

// lostAttempt is an attempt whose answer tokenwarm recorded as lost: its
// user, the replica whose process presented, and when it started (to the
// second, as the event records it).
type lostAttempt struct {
	user    string
	replica int
	started time.Time
}

// candidate is a rotation whose new refresh token tokenwarm may never have
// stored.
type candidate struct {
	rot emulator.Rotation
	why string
}

// lossInput is what matching needs.
type lossInput struct {
	// episodes: per username, the reauth reasons of every needs_reauth
	// period a connection went through (during the run and at the end).
	episodes  map[string][]string
	rotations []emulator.Rotation
	kills     []kill
	listener  map[string]int // emulator listening address -> replica
	// lost: the attempts tokenwarm itself recorded as lost (its
	// rotation_lost events name the attempt's worker, i.e. the replica
	// process that presented the token). A connection's refreshes go to
	// the login host it was connected through, whichever replica presents,
	// so the listener names the replica that connected it, not always the
	// one that presented.
	lost []lostAttempt
	// window: how long after an answer a replica may still be committing it
	// (its upstream timeout plus commit retry budget, and a margin).
	window time.Duration
	// A replica killed while its request was at the emulator leaves an
	// answer that looks delivered when the emulator's write landed in a
	// socket buffer before the reset; on a loaded machine the emulator may
	// process a request well after it arrived. So a kill counts from one
	// window before the rotation (the attempt's lease bounds both sides).
	inflight time.Duration
	// current: per username, the refresh token current at the emulator for
	// a connection that ended active and working; a rotation that issued it
	// was not lost.
	current map[string]string
}

// lossReport is the result of matching.
type lossReport struct {
	Candidates   map[string]int `json:"candidates_by_why"`
	RotationLost int            `json:"rotation_lost_episodes"`
	Matched      int            `json:"matched"`
	Unmatched    map[string]int `json:"unmatched_by_user,omitempty"`
	// Details describe the rotations and kills around an unmatched user,
	// to tell a real loss from the harness's bookkeeping.
	Details         []string            `json:"unmatched_details,omitempty"`
	OtherReauth     map[string][]string `json:"other_reauth_by_user,omitempty"`
	CandidatesCount int                 `json:"candidates"`
}

func isRotationLost(reason string) bool { return strings.HasPrefix(reason, "rotation_lost") }

// candidates returns, per username, the rotations that could explain one
// rotation_lost each. A rotation qualifies when its new token was never
// presented afterwards (had tokenwarm stored it, it would have presented it
// at its next refresh) and either the emulator knows the answer never
// arrived, or the request came from a replica SIGKILLed between sending it
// and the end of the window after its answer.
func candidates(in lossInput) map[string][]candidate {
	presented := make(map[string]bool, len(in.rotations))
	for _, r := range in.rotations {
		presented[r.Presented] = true
	}
	out := map[string][]candidate{}
	for _, r := range in.rotations {
		if presented[r.Issued] || (r.Issued != "" && in.current[r.Username] == r.Issued) {
			continue
		}
		why := ""
		switch {
		case !r.Delivered && r.Why != "":
			why = r.Why
		case r.Delivered:
			for _, k := range in.kills {
				if presenters(in, r)[k.replica] && !k.at.Before(r.At.Add(-in.window)) && k.at.Sub(r.AnsweredAt) <= in.window {
					why = candKilledAfter
					break
				}
			}
		}
		if why != "" {
			out[r.Username] = append(out[r.Username], candidate{rot: r, why: why})
		}
	}
	return out
}

// presenters returns the replicas that may have presented r: the one
// whose listener it came to, and the replica of every attempt of that user
// recorded as lost that started up to a window before it (a second's slack
// for the event's whole-second time).
func presenters(in lossInput, r emulator.Rotation) map[int]bool {
	out := map[int]bool{}
	if rep, ok := in.listener[r.Local]; ok {
		out[rep] = true
	}
	for _, a := range in.lost {
		if a.user == r.Username && !r.At.Before(a.started) && r.At.Sub(a.started) <= in.window+time.Second {
			out[a.replica] = true
		}
	}
	return out
}

// matchLosses matches every rotation_lost episode to a distinct candidate
// rotation of the same user. Any other reauth reason is reported apart: it
// is a failure.
func matchLosses(in lossInput) lossReport {
	rep := lossReport{Candidates: map[string]int{}, Unmatched: map[string]int{}, OtherReauth: map[string][]string{}}
	cands := candidates(in)
	for _, cs := range cands {
		for _, c := range cs {
			rep.Candidates[c.why]++
			rep.CandidatesCount++
		}
	}
	users := make([]string, 0, len(in.episodes))
	for u := range in.episodes {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		lost := 0
		for _, reason := range in.episodes[u] {
			if isRotationLost(reason) {
				lost++
			} else {
				rep.OtherReauth[u] = append(rep.OtherReauth[u], reason)
			}
		}
		rep.RotationLost += lost
		m := min(lost, len(cands[u]))
		rep.Matched += m
		if lost > m {
			rep.Unmatched[u] = lost - m
			rep.Details = append(rep.Details, describe(u, in))
		}
	}
	if len(rep.Unmatched) == 0 {
		rep.Unmatched = nil
	}
	if len(rep.OtherReauth) == 0 {
		rep.OtherReauth = nil
	}
	return rep
}

// describe lists a user's rotations (when, which replica, delivered or why
// not, whether the new token was presented later) and the kills of the
// run, for a loss that could not be matched.
func describe(user string, in lossInput) string {
	presented := make(map[string]bool, len(in.rotations))
	for _, r := range in.rotations {
		presented[r.Presented] = true
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v\n", user, in.episodes[user])
	for _, r := range in.rotations {
		if r.Username != user {
			continue
		}
		rep, ok := in.listener[r.Local]
		if !ok {
			rep = -1
		}
		fmt.Fprintf(&b, "  rotation at %s answered %s replica %d delivered=%v why=%q new token presented later=%v\n",
			r.At.Format("15:04:05.000"), r.AnsweredAt.Format("15:04:05.000"), rep, r.Delivered, r.Why, presented[r.Issued])
	}
	for _, a := range in.lost {
		if a.user == user {
			fmt.Fprintf(&b, "  attempt recorded lost: by replica %d, started %s\n", a.replica, a.started.Format("15:04:05"))
		}
	}
	for _, k := range in.kills {
		fmt.Fprintf(&b, "  kill of replica %d at %s\n", k.replica, k.at.Format("15:04:05.000"))
	}
	return b.String()
}
