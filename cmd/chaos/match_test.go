package main

import (
	"testing"
	"time"

	"github.com/tokenwarm/tokenwarm/emulator"
)

func TestMatchLosses(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	listener := map[string]int{"127.0.0.1:1": 0, "127.0.0.1:2": 1}
	rot := func(user, presented, issued string, delivered bool, why, local string, answered time.Duration) emulator.Rotation {
		return emulator.Rotation{Username: user, Presented: presented, Issued: issued, Delivered: delivered, Why: why,
			Local: local, At: t0, AnsweredAt: t0.Add(answered)}
	}
	cases := []struct {
		name      string
		episodes  map[string][]string
		rotations []emulator.Rotation
		kills     []kill
		current   map[string]string
		lost      []lostAttempt
		matched   int
		unmatched map[string]int
		other     int
		cands     map[string]int
	}{
		{
			name:     "no episodes, nothing to match",
			episodes: map[string][]string{},
			cands:    map[string]int{},
		},
		{
			name:      "a dropped answer explains one rotation_lost",
			episodes:  map[string][]string{"a": {"rotation_lost: introspection says inactive"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", false, "dropped", "127.0.0.1:1", 0)},
			matched:   1,
			cands:     map[string]int{"dropped": 1},
		},
		{
			name:      "a loss of another user does not count",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("b", "t1", "t2", false, "client_gone", "127.0.0.1:1", 0)},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{"client_gone": 1},
		},
		{
			name:     "each loss matches a distinct rotation",
			episodes: map[string][]string{"a": {"rotation_lost", "rotation_lost"}},
			rotations: []emulator.Rotation{
				rot("a", "t1", "t2", false, "client_gone", "127.0.0.1:1", 0),
				rot("a", "u1", "u2", true, "", "127.0.0.1:1", 0),
			},
			matched:   1,
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{"client_gone": 1},
		},
		{
			name:     "a lost answer whose token was presented later was not lost to tokenwarm",
			episodes: map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{
				rot("a", "t1", "t2", false, "client_gone", "127.0.0.1:1", 0),
				rot("a", "t2", "t3", true, "", "127.0.0.1:1", 0),
			},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{},
		},
		{
			name:      "answered to a replica killed right after",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:2", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Second)}},
			matched:   1,
			cands:     map[string]int{candKilledAfter: 1},
		},
		{
			name:      "answered to a replica killed later than the window",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:2", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Minute)}},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{},
		},
		{
			name:      "answered to another replica than the killed one",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:1", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Second)}},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{},
		},
		{
			name:      "presented by a replica other than the one whose listener it came to, killed right after",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:1", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Second)}},
			lost:      []lostAttempt{{user: "a", replica: 1, started: t0.Add(-500 * time.Millisecond).Truncate(time.Second)}},
			matched:   1,
			cands:     map[string]int{candKilledAfter: 1},
		},
		{
			name:      "a lost attempt of another user does not say who presented",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:1", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Second)}},
			lost:      []lostAttempt{{user: "b", replica: 1, started: t0}},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{},
		},
		{
			name:      "a lost attempt that started long before the rotation is another one",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:1", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Second)}},
			lost:      []lostAttempt{{user: "a", replica: 1, started: t0.Add(-time.Minute)}},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{},
		},
		{
			name:      "killed while the answer was on its way, which the emulator saw as delivered",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:2", 2*time.Second)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Second)}},
			matched:   1,
			cands:     map[string]int{candKilledAfter: 1},
		},
		{
			name:      "killed before its request could have been sent is not this case",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:2", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(-time.Minute)}},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{},
		},
		{
			name:      "the token current at the end was not lost",
			episodes:  map[string][]string{"a": {"rotation_lost"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", true, "", "127.0.0.1:2", 0)},
			kills:     []kill{{replica: 1, at: t0.Add(time.Second)}},
			current:   map[string]string{"a": "t2"},
			unmatched: map[string]int{"a": 1},
			cands:     map[string]int{},
		},
		{
			name:      "any other reauth reason is reported",
			episodes:  map[string][]string{"a": {"invalid_grant: expired access/refresh token"}},
			rotations: []emulator.Rotation{rot("a", "t1", "t2", false, "dropped", "127.0.0.1:1", 0)},
			other:     1,
			cands:     map[string]int{"dropped": 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := matchLosses(lossInput{episodes: tc.episodes, rotations: tc.rotations, kills: tc.kills, lost: tc.lost,
				listener: listener, window: 5 * time.Second, inflight: 2 * time.Second, current: tc.current})
			if rep.Matched != tc.matched || len(rep.OtherReauth) != tc.other {
				t.Fatalf("report %+v", rep)
			}
			if len(rep.Unmatched) != len(tc.unmatched) {
				t.Fatalf("unmatched %v, want %v", rep.Unmatched, tc.unmatched)
			}
			for u, n := range tc.unmatched {
				if rep.Unmatched[u] != n {
					t.Fatalf("unmatched %v, want %v", rep.Unmatched, tc.unmatched)
				}
			}
			if len(rep.Candidates) != len(tc.cands) {
				t.Fatalf("candidates %v, want %v", rep.Candidates, tc.cands)
			}
			for k, n := range tc.cands {
				if rep.Candidates[k] != n {
					t.Fatalf("candidates %v, want %v", rep.Candidates, tc.cands)
				}
			}
		})
	}
}
