package models

import (
	"context"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// WebhookDelivery is one event to deliver to one endpoint: a row of the
// webhook outbox, written in the transaction that stores the audit event
// it announces, so both commit or neither does.
type WebhookDelivery struct {
	ID            int64
	EventID       string
	EventType     string
	EndpointURL   string
	Payload       string
	CreatedAt     time.Time
	NextAttemptAt time.Time
	Attempts      int
	DeliveredAt   *time.Time
	LastError     string
}

// TableName pins the table name.
func (WebhookDelivery) TableName() string { return "webhook_outbox" }

// Announcer turns stored audit events (their IDs set) into the webhook
// deliveries that announce them; package webhooks builds one.
type Announcer func(events []Event) ([]WebhookDelivery, error)

// SetAnnouncer makes every operation that stores events also write their
// webhook deliveries, in the same transaction. Call it once, at wiring.
func (d *DB) SetAnnouncer(a Announcer) { d.announce = a }

// insertEvents writes events as fresh rows (IDs a rolled-back try filled in
// are never reused) and their webhook deliveries, in tx.
func (d *DB) insertEvents(tx *gorm.DB, events []Event) ([]Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	rows := make([]Event, len(events))
	for i, ev := range events {
		ev.ID = 0
		rows[i] = ev
	}
	if err := tx.Create(&rows).Error; err != nil {
		return nil, err
	}
	if d.announce == nil {
		return rows, nil
	}
	deliveries, err := d.announce(rows)
	if err != nil || len(deliveries) == 0 {
		return rows, err
	}
	return rows, tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&deliveries).Error
}

// RecordEvents stores events and their webhook deliveries in one
// transaction.
func (d *DB) RecordEvents(ctx context.Context, events []Event) error {
	return d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		_, err := d.insertEvents(tx, events)
		return err
	})
}
