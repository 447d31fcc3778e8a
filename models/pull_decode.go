package models

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// scanPull scans one row of the pull's statement into dests, and reports
// whether it had to hand the row to pgx. With prepared statements (pgx's
// default exec mode) pgx asks for text columns in text format and every
// other column the pull reads in binary; both are decoded here by hand:
// pgx's generic scanning plans every column of every row anew, with
// reflection, and that was a tenth of a pull's CPU. Anything else (text
// results of other types behind a pooler's exec or simple protocol mode,
// an unexpected type) goes through pgx.
func scanPull(m *pgtype.Map, fds []pgconn.FieldDescription, raw [][]byte, dests ...any) (slow bool, err error) {
	for i, d := range dests {
		err := decodeValue(fds[i].DataTypeOID, fds[i].Format, raw[i], d)
		if errors.Is(err, errNotFast) {
			return true, pgx.ScanRow(m, fds, raw, dests...)
		}
		if err != nil {
			return false, fmt.Errorf("column %s: %w", fds[i].Name, err)
		}
	}
	return false, nil
}

// decodeValue decodes one value of the pull's row: text in either format
// (the text format of text is the text itself), every other type in
// binary.
func decodeValue(oid uint32, format int16, src []byte, dst any) error {
	if format == pgtype.BinaryFormatCode {
		return decodeBinary(oid, src, dst)
	}
	d, ok := dst.(*string)
	if format != pgtype.TextFormatCode || !ok || (oid != pgtype.TextOID && oid != pgtype.VarcharOID) {
		return errNotFast
	}
	if src == nil {
		return errors.New("NULL into a string")
	}
	*d = string(src)
	return nil
}

var errNotFast = errors.New("not a type decoded by hand")

// microsecondsToY2K is 2000-01-01 00:00 UTC, Postgres' epoch, in
// microseconds since the Unix epoch.
const microsecondsToY2K = 946_684_800 * 1_000_000

// decodeBinary decodes one binary value of the types the pull reads.
func decodeBinary(oid uint32, src []byte, dst any) error {
	switch d := dst.(type) {
	case *string:
		switch {
		case src == nil:
			return errors.New("NULL into a string")
		case oid == pgtype.TextOID || oid == pgtype.VarcharOID:
			*d = string(src)
		case oid == pgtype.UUIDOID && len(src) == 16:
			var buf [36]byte
			hex.Encode(buf[0:8], src[0:4])
			buf[8] = '-'
			hex.Encode(buf[9:13], src[4:6])
			buf[13] = '-'
			hex.Encode(buf[14:18], src[6:8])
			buf[18] = '-'
			hex.Encode(buf[19:23], src[8:10])
			buf[23] = '-'
			hex.Encode(buf[24:], src[10:16])
			*d = string(buf[:])
		default:
			return errNotFast
		}
	case **time.Time:
		if src == nil {
			*d = nil
			return nil
		}
		t, err := decodeTimestamptz(oid, src)
		if err != nil {
			return err
		}
		*d = &t
	case *time.Time:
		if src == nil {
			return errors.New("NULL into a time")
		}
		t, err := decodeTimestamptz(oid, src)
		if err != nil {
			return err
		}
		*d = t
	case *int64:
		if oid != pgtype.Int8OID || len(src) != 8 {
			return errNotFast
		}
		*d = int64(binary.BigEndian.Uint64(src))
	case *int:
		if oid != pgtype.Int4OID || len(src) != 4 {
			return errNotFast
		}
		*d = int(int32(binary.BigEndian.Uint32(src)))
	case *bool:
		if oid != pgtype.BoolOID || len(src) != 1 {
			return errNotFast
		}
		*d = src[0] == 1
	default:
		return errNotFast
	}
	return nil
}

// decodeTimestamptz decodes a binary timestamptz as pgx does: the instant,
// in the local time zone. The infinities are refused, as pgx refuses them
// for a time.Time.
func decodeTimestamptz(oid uint32, src []byte) (time.Time, error) {
	if oid != pgtype.TimestamptzOID || len(src) != 8 {
		return time.Time{}, errNotFast
	}
	us := int64(binary.BigEndian.Uint64(src))
	if us == 1<<63-1 || us == -1<<63 {
		return time.Time{}, errors.New("an infinite timestamp into a time")
	}
	return time.Unix(microsecondsToY2K/1_000_000+us/1_000_000, (microsecondsToY2K%1_000_000*1_000)+(us%1_000_000*1_000)), nil
}
