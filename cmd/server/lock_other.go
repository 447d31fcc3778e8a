//go:build !unix

package main

const lockName = "tokenwarm.lock"

type lockedError struct{}

func (e *lockedError) Error() string { return "the data directory lock is held" }
func (e *lockedError) by() string    { return "" }

type dataDirLock struct{}

// lockDataDir takes no lock where flock does not exist: one embedded
// server per data directory is then the operator's job.
func lockDataDir(string) (*dataDirLock, error) { return &dataDirLock{}, nil }

func (l *dataDirLock) release() {}
