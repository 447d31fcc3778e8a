package models

import (
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// The hand decoder agrees with pgx on every type and edge value the pull
// reads.
func TestDecodeBinaryAgreesWithPgx(t *testing.T) {
	m := pgtype.NewMap()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		oid   uint32
		value any // encoded by pgx
		dst   func() any
	}{
		{pgtype.TextOID, "v1.k1.sealed", func() any { return new(string) }},
		{pgtype.TextOID, "", func() any { return new(string) }},
		{pgtype.TextOID, "ünïcödé \x00?", func() any { return new(string) }},
		{pgtype.UUIDOID, [16]byte{0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x4a, 0x6b, 0x8c, 0x7d, 0x9e, 0x0f, 0x1a, 0x2b, 0x3c, 0xff}, func() any { return new(string) }},
		{pgtype.TimestamptzOID, at("2026-12-01T03:04:05.123456Z"), func() any { return new(time.Time) }},
		{pgtype.TimestamptzOID, at("1999-12-31T23:59:59.999999Z"), func() any { return new(time.Time) }},
		{pgtype.TimestamptzOID, at("1969-07-20T20:17:40.5Z"), func() any { return new(time.Time) }},
		{pgtype.TimestamptzOID, at("2000-01-01T00:00:00Z"), func() any { return new(*time.Time) }},
		{pgtype.TimestamptzOID, nil, func() any { return new(*time.Time) }},
		{pgtype.Int8OID, int64(-1 << 40), func() any { return new(int64) }},
		{pgtype.Int8OID, int64(7), func() any { return new(int64) }},
		{pgtype.Int4OID, int32(-3), func() any { return new(int) }},
		{pgtype.Int4OID, int32(1 << 30), func() any { return new(int) }},
		{pgtype.BoolOID, true, func() any { return new(bool) }},
		{pgtype.BoolOID, false, func() any { return new(bool) }},
	}
	for _, c := range cases {
		src, err := m.Encode(c.oid, pgtype.BinaryFormatCode, c.value, []byte{})
		if c.value == nil {
			src = nil // SQL NULL
		}
		if err != nil {
			t.Fatalf("encode %v: %v", c.value, err)
		}
		want, got := c.dst(), c.dst()
		if err := m.Scan(c.oid, pgtype.BinaryFormatCode, src, want); err != nil {
			t.Fatalf("pgx scan %v: %v", c.value, err)
		}
		if err := decodeBinary(c.oid, src, got); err != nil {
			t.Fatalf("decode %v: %v", c.value, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v (oid %d): decoded %#v, pgx %#v", c.value, c.oid, reflect.ValueOf(got).Elem(), reflect.ValueOf(want).Elem())
		}
	}

	// Text in text format is the text itself; other text results are pgx's.
	for _, v := range []string{"", "owner/005", "ünïcödé"} {
		var want, got string
		if err := m.Scan(pgtype.TextOID, pgtype.TextFormatCode, []byte(v), &want); err != nil {
			t.Fatal(err)
		}
		if err := decodeValue(pgtype.TextOID, pgtype.TextFormatCode, []byte(v), &got); err != nil || got != want {
			t.Errorf("text %q in text format: %q, %v; pgx %q", v, got, err, want)
		}
	}
	for _, c := range []struct {
		oid uint32
		dst any
	}{{pgtype.UUIDOID, new(string)}, {pgtype.TimestamptzOID, new(time.Time)}, {pgtype.BoolOID, new(bool)}, {pgtype.TextOID, new(int)}} {
		if err := decodeValue(c.oid, pgtype.TextFormatCode, []byte("x"), c.dst); err != errNotFast {
			t.Errorf("oid %d in text format into %T: %v, want errNotFast", c.oid, c.dst, err)
		}
	}
	if err := decodeValue(pgtype.TextOID, pgtype.TextFormatCode, nil, new(string)); err == nil || err == errNotFast {
		t.Errorf("NULL text into a string: %v, want an error", err)
	}

	// What it does not know goes to pgx; what cannot be is an error.
	if err := decodeBinary(pgtype.NumericOID, []byte{0, 0, 0, 0, 0, 0, 0, 0}, new(int64)); err != errNotFast {
		t.Errorf("numeric into int64: %v, want errNotFast", err)
	}
	if err := decodeBinary(pgtype.TextOID, nil, new(string)); err == nil {
		t.Error("NULL into a string was accepted")
	}
	inf, _ := m.Encode(pgtype.TimestamptzOID, pgtype.BinaryFormatCode, pgtype.Timestamptz{Valid: true, InfinityModifier: pgtype.Infinity}, nil)
	if err := decodeBinary(pgtype.TimestamptzOID, inf, new(time.Time)); err == nil || err == errNotFast {
		t.Errorf("infinity into a time: %v, want an error", err)
	}
}
