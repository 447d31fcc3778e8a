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

// AnnouncePeople makes the events of the kinds of announces handed to the
// announcer carry their connection's Person (read in the storing
// transaction), so webhook payloads can name the user; nil turns it off.
// Other events (a refresh's) cost no read. Call it once, at wiring.
func (d *DB) AnnouncePeople(announces func(kind string) bool) { d.announcePeople = announces }

// Person is who a connection belongs to, as far as tokenwarm knows:
// personal data, never a token. Only the announcer sees it.
type Person struct {
	OrgID    string
	UserID   string
	Name     string
	Username string
	Email    string
	OrgName  string
}

// people reads the Person of the connection of every event of a kind
// wanted, in tx.
func people(tx *gorm.DB, events []Event, wanted func(kind string) bool) (map[string]*Person, error) {
	var ids []string
	for _, ev := range events {
		if ev.ConnectionID != nil && wanted(ev.Kind) {
			ids = append(ids, *ev.ConnectionID)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var rows []Connection
	if err := tx.Select("id", "org_id", "user_id", "user_name", "user_username", "user_email", "org_name").
		Where("id IN ?", ids).Find(&rows).Error; err != nil {
		return nil, err
	}
	out := make(map[string]*Person, len(rows))
	for _, c := range rows {
		out[c.ID] = &Person{OrgID: c.OrgID, UserID: c.UserID, Name: c.UserName, Username: c.UserUsername, Email: c.UserEmail, OrgName: c.OrgName}
	}
	return out, nil
}

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
	return rows, d.announceEvents(tx, rows)
}

// announceEvents writes the webhook deliveries of stored events (their IDs
// set), in tx.
func (d *DB) announceEvents(tx *gorm.DB, rows []Event) error {
	if d.announce == nil || len(rows) == 0 {
		return nil
	}
	announced := rows
	if d.announcePeople != nil {
		who, err := people(tx, rows, d.announcePeople)
		if err != nil {
			return err
		}
		announced = make([]Event, len(rows))
		for i, ev := range rows {
			if ev.ConnectionID != nil && d.announcePeople(ev.Kind) {
				ev.Person = who[*ev.ConnectionID]
			}
			announced[i] = ev
		}
	}
	deliveries, err := d.announce(announced)
	if err != nil || len(deliveries) == 0 {
		return err
	}
	return tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&deliveries).Error
}

// RecordEvents stores events and their webhook deliveries in one
// transaction.
func (d *DB) RecordEvents(ctx context.Context, events []Event) error {
	return d.gorm.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		_, err := d.insertEvents(tx, events)
		return err
	})
}
