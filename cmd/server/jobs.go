package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/robfig/cron/v3"

	"github.com/tokenwarm/tokenwarm/internal/cronlog"
)

// job is a piece of a replica's periodic work.
type job struct {
	name string
	spec string // robfig/cron syntax, e.g. "@every 1h"
	run  func(ctx context.Context)
}

// startJobs runs jobs on robfig/cron, as the warmer runs its passes: one
// way to run periodic work. A run still going when the next is due is
// skipped. stop cancels the running ones' context and waits for them.
func startJobs(ctx context.Context, log *slog.Logger, jobs ...job) (stop func(), err error) {
	logger := cronlog.New(log)
	c := cron.New(cron.WithLogger(logger), cron.WithChain(cron.Recover(logger), cron.SkipIfStillRunning(logger)))
	jobsCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	for _, j := range jobs {
		if _, err := c.AddFunc(j.spec, func() { j.run(jobsCtx) }); err != nil {
			cancel()
			return nil, fmt.Errorf("job %s: schedule %q: %w", j.name, j.spec, err)
		}
	}
	c.Start()
	return func() {
		cancel()
		<-c.Stop().Done()
	}, nil
}
