package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/tokenwarm/tokenwarm/clock"
	"github.com/tokenwarm/tokenwarm/models"
	"github.com/tokenwarm/tokenwarm/restore"
	"github.com/tokenwarm/tokenwarm/salesforce"
	"github.com/tokenwarm/tokenwarm/seal"
	"github.com/tokenwarm/tokenwarm/vault"
	"github.com/tokenwarm/tokenwarm/webhooks"
)

// restoreCommand runs `tokenwarm restore`: the procedure after a restore
// of the database from a backup (docs/RUNBOOK-RESTORE.md).
func restoreCommand(ctx context.Context, cfg *Config, db *models.DB, ring *seal.Ring, log *slog.Logger, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stdout)
	concurrency := fs.Int("concurrency", 4, "introspection calls in flight")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *concurrency < 1 || *concurrency > 64 {
		return errors.New("restore: -concurrency must be from 1 to 64")
	}
	if cfg.Demo() {
		return errors.New("restore: the built-in emulator keeps its tokens in the server process, so there is nothing to verify them against; set SALESFORCE_LOGIN_URL")
	}
	if _, err := db.Migrate(ctx); err != nil {
		return err
	}
	// Its events (needs_reauth above all) are announced like the server's.
	announceWebhooks(db, cfg)
	clk := clock.Clock(clock.System{})
	v := vault.New(db, ring, salesforceClient(cfg, cfg.ClientID, cfg.ClientSecret, clk), clk, log, vaultConfig(cfg, nil))
	rep, err := restore.Run(ctx, db, v, restore.Options{Concurrency: *concurrency, Worker: v.Config().Worker, Clock: clk, Log: log})
	fmt.Fprintf(stdout, "restore: %s in %s\n", rep, rep.Duration.Round(time.Millisecond))
	if err != nil {
		return err
	}
	if rep.Unverified > 0 {
		fmt.Fprintf(stdout, "restore: %d connection(s) could not be verified; they stay marked and each is introspected again before its next refresh (events introspection_failed)\n", rep.Unverified)
	}
	fmt.Fprintln(stdout, "restore: refreshes resume")
	return nil
}

// guardJob runs the restore guard's periodic check.
func guardJob(g *restore.Guard, log *slog.Logger) func(ctx context.Context) {
	return func(ctx context.Context) {
		checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := g.Check(checkCtx); err != nil && ctx.Err() == nil {
			log.Warn("could not check the database's history; the hold stays as it was", "err", err)
		}
	}
}

// salesforceClient is the one client of Salesforce's OAuth endpoints.
func salesforceClient(cfg *Config, clientID, clientSecret string, clk clock.Clock) *salesforce.Client {
	return &salesforce.Client{
		HTTP: &http.Client{Transport: salesforceTransport(cfg)}, ClientID: clientID, ClientSecret: clientSecret,
		RedirectURI: cfg.PublicURL + "/v1/oauth/callback", Timeout: cfg.UpstreamTimeout,
		SessionTimeout: cfg.SessionTimeout, UseIntrospection: cfg.Introspect, Clock: clk,
		AllowedInstanceHosts: cfg.InstanceHosts,
	}
}

// vaultConfig is the refresh protocol's configuration.
func vaultConfig(cfg *Config, observe func(cause, outcome string, upstream time.Duration)) vault.Config {
	return vault.Config{
		Observe:     observe,
		LockTimeout: cfg.LockTimeout, UpstreamTimeout: cfg.UpstreamTimeout,
		CommitRetryBudget: cfg.CommitRetry, AttemptLease: cfg.AttemptLease(),
		BackoffBase: cfg.BackoffBase, BackoffMax: cfg.BackoffMax, IdleTTL: cfg.RefreshIdleTTL,
		WarmInterval: cfg.WarmInterval, WarmJitter: cfg.WarmJitter,
		// Half the pool: each refresh briefly holds two connections. Warm
		// concurrency is capped below this so pulls always find slots.
		MaxConcurrentRefreshes: cfg.DBMaxConns / 2,
		SkipIdentity:           !cfg.CaptureIdentity,
	}
}

// announceWebhooks makes every event stored with a webhook type go to the
// outbox in the same transaction, with the connection's person when
// TOKENWARM_WEBHOOK_IDENTITY is on, and returns the receivers.
func announceWebhooks(db *models.DB, cfg *Config) []webhooks.Endpoint {
	endpoints := webhookEndpoints(cfg)
	db.SetAnnouncer(webhooks.Announcer(endpoints))
	if cfg.WebhookIdentity && len(endpoints) > 0 {
		db.AnnouncePeople(webhooks.Announces)
	}
	return endpoints
}

// webhookEndpoints are the configured webhook receivers.
func webhookEndpoints(cfg *Config) []webhooks.Endpoint {
	var endpoints []webhooks.Endpoint
	for _, u := range cfg.WebhookURLs {
		ep := webhooks.Endpoint{URL: u, Secret: cfg.WebhookSecret}
		if cfg.WebhookPreviousSecret != "" {
			ep.PreviousSecrets = []string{cfg.WebhookPreviousSecret}
		}
		endpoints = append(endpoints, ep)
	}
	return endpoints
}
