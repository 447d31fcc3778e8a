package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// rawPuller is a lean HTTP/1.1 client for the measured pull phases, one per
// worker, on one kept-alive connection: pgbench is a lean C client, and on
// a machine whose cores the load generator shares with tokenwarm and
// Postgres, net/http's client (~50–70 µs of CPU per request here) would
// take cores from what is measured. It writes the request by hand, reads
// the status line, the headers and a Content-Length body, and counts an
// answer as a success only when it is a 200 whose body carries a
// non-empty access_token. The other phases use net/http and decode the
// JSON in full.
type rawPuller struct {
	addr string // host:port
	host string
	conn net.Conn
	r    *bufio.Reader
	req  []byte
	body []byte
}

func newRawPuller(base string) *rawPuller {
	host := base[len("http://"):]
	return &rawPuller{addr: host, host: host}
}

var (
	tokenField = []byte(`"access_token":"`)
	errNoLen   = errors.New("answer without Content-Length")
)

// pull GETs the user's access token: "" on success, else an outcome label
// as client.pull gives.
func (p *rawPuller) pull(ctx context.Context, u *appUser) string {
	if ctx.Err() != nil {
		return "cancelled"
	}
	status, err := p.roundTrip(ctx, u)
	if err != nil {
		p.close()
		if ctx.Err() != nil {
			return "cancelled"
		}
		return "transport: " + err.Error()
	}
	if status != 200 {
		return fmt.Sprintf("%d", status)
	}
	i := bytes.Index(p.body, tokenField)
	if i < 0 || len(p.body) <= i+len(tokenField) || p.body[i+len(tokenField)] == '"' {
		return "200 without a token"
	}
	return ""
}

func (p *rawPuller) roundTrip(ctx context.Context, u *appUser) (int, error) {
	if p.conn == nil {
		c, err := (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return 0, err
		}
		p.conn, p.r = c, bufio.NewReaderSize(c, 4096)
	}
	// A stuck server fails the phase, not the bench.
	var dl time.Time
	if d, ok := ctx.Deadline(); ok {
		dl = d.Add(time.Minute)
	}
	_ = p.conn.SetDeadline(dl)
	p.req = append(p.req[:0], "GET /v1/connections/"...)
	p.req = append(p.req, u.connID...)
	p.req = append(p.req, "/access-token HTTP/1.1\r\nHost: "...)
	p.req = append(p.req, p.host...)
	p.req = append(p.req, "\r\nAuthorization: Bearer "...)
	p.req = append(p.req, u.jwt...)
	p.req = append(p.req, "\r\n\r\n"...)
	if _, err := p.conn.Write(p.req); err != nil {
		return 0, err
	}
	line, err := p.r.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	length, closeAfter := -1, false
	for {
		h, err := p.r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Connection")) && bytes.EqualFold(value, []byte("close")):
			closeAfter = true
		}
	}
	if length < 0 {
		return 0, errNoLen
	}
	if cap(p.body) < length {
		p.body = make([]byte, length)
	}
	p.body = p.body[:length]
	if _, err := io.ReadFull(p.r, p.body); err != nil {
		return 0, err
	}
	if closeAfter {
		p.close()
	}
	return status, nil
}

func (p *rawPuller) close() {
	if p.conn != nil {
		p.conn.Close()
		p.conn, p.r = nil, nil
	}
}
