package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Opcode is the first 16 bits of every TFTP packet.
type Opcode uint16

// Opcodes of RFC 1350 and RFC 2347 (OACK).
const (
	OpRRQ   Opcode = 1
	OpWRQ   Opcode = 2
	OpData  Opcode = 3
	OpAck   Opcode = 4
	OpError Opcode = 5
	OpOACK  Opcode = 6
)

// ErrorCode is the code of an ERROR packet (RFC 1350, RFC 2347).
type ErrorCode uint16

// Error codes the server sends.
const (
	ErrCodeUndefined     ErrorCode = 0
	ErrCodeNotFound      ErrorCode = 1
	ErrCodeAccess        ErrorCode = 2
	ErrCodeIllegalOp     ErrorCode = 4
	ErrCodeUnknownTID    ErrorCode = 5
	ErrCodeOptionRefused ErrorCode = 8
)

// ErrMalformed marks bytes that are not a well-formed TFTP packet. The
// server drops and counts such packets without answering them.
var ErrMalformed = errors.New("malformed tftp packet")

// Option is one RFC 2347 option of a request, as the client sent it.
type Option struct {
	Name  string // lower case: option names are case-insensitive
	Value string
}

// Request is a parsed read (RRQ) or write (WRQ) request.
type Request struct {
	Op       Opcode
	Filename string
	Mode     string   // lower case, e.g. "octet" or "netascii"
	Options  []Option // in the order the client sent them
}

// Option returns the value of the named option and whether the client sent it.
func (r Request) Option(name string) (string, bool) {
	for _, o := range r.Options {
		if o.Name == name {
			return o.Value, true
		}
	}
	return "", false
}

// ParseRequest parses an RRQ or WRQ packet: opcode, filename, mode and
// option name/value pairs, each string NUL-terminated. Trailing NUL padding,
// which some embedded clients send, is tolerated, and so is an option with
// an empty value; an option without a value, a repeated option, an empty
// filename, mode or option name is not. All such errors wrap ErrMalformed.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < 2 {
		return Request{}, fmt.Errorf("parse request: %d bytes: %w", len(b), ErrMalformed)
	}
	op := Opcode(binary.BigEndian.Uint16(b))
	if op != OpRRQ && op != OpWRQ {
		return Request{}, fmt.Errorf("parse request: opcode %d is not a request: %w", op, ErrMalformed)
	}
	body := b[2:]
	if len(body) == 0 || body[len(body)-1] != 0 {
		return Request{}, fmt.Errorf("parse request: no NUL terminator: %w", ErrMalformed)
	}
	fields := strings.Split(string(body[:len(body)-1]), "\x00")
	// Padding NULs read as empty fields: drop them while they leave an
	// odd count or an empty pair, but keep an option's empty value.
	for n := len(fields); n > 2 && fields[n-1] == "" && (n%2 != 0 || fields[n-2] == ""); n = len(fields) {
		fields = fields[:n-1]
	}
	if len(fields) < 2 || len(fields)%2 != 0 {
		return Request{}, fmt.Errorf("parse request: %d fields: %w", len(fields), ErrMalformed)
	}
	r := Request{Op: op, Filename: fields[0], Mode: strings.ToLower(fields[1])}
	if r.Filename == "" || r.Mode == "" {
		return Request{}, fmt.Errorf("parse request: empty filename or mode: %w", ErrMalformed)
	}
	// A set, not a search of the options so far: a 4 KiB request holds
	// some 700 options, and comparing each with all before it took 2.6 ms
	// of the one goroutine that reads every request.
	seen := make(map[string]bool, (len(fields)-2)/2)
	for i := 2; i < len(fields); i += 2 {
		name := strings.ToLower(fields[i])
		if name == "" {
			return Request{}, fmt.Errorf("parse request: empty option name: %w", ErrMalformed)
		}
		if seen[name] {
			return Request{}, fmt.Errorf("parse request: option %q repeated: %w", name, ErrMalformed)
		}
		seen[name] = true
		r.Options = append(r.Options, Option{Name: name, Value: fields[i+1]})
	}
	return r, nil
}

// AppendBinary appends the request in wire form to b.
func (r Request) AppendBinary(b []byte) ([]byte, error) {
	strs := []string{r.Filename, r.Mode}
	for _, o := range r.Options {
		strs = append(strs, o.Name, o.Value)
	}
	for _, s := range strs {
		if strings.IndexByte(s, 0) >= 0 {
			return b, fmt.Errorf("encode request: %q holds a NUL byte", s)
		}
	}
	b = binary.BigEndian.AppendUint16(b, uint16(r.Op))
	for _, s := range strs {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b, nil
}

// appendOACK appends an OACK packet carrying opts.
func appendOACK(b []byte, opts []Option) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(OpOACK))
	for _, o := range opts {
		b = append(b, o.Name...)
		b = append(b, 0)
		b = append(b, o.Value...)
		b = append(b, 0)
	}
	return b
}

// appendError appends an ERROR packet.
func appendError(b []byte, code ErrorCode, msg string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(OpError))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	b = append(b, strings.ReplaceAll(msg, "\x00", "")...)
	return append(b, 0)
}

// reply is what a client sends on a transfer's socket: an ACK or an ERROR.
type reply struct {
	op    Opcode
	block uint16    // OpAck
	code  ErrorCode // OpError
	msg   string    // OpError
}

// parseReply parses an ACK or ERROR packet from a client.
func parseReply(b []byte) (reply, error) {
	if len(b) < 4 {
		return reply{}, fmt.Errorf("parse reply: %d bytes: %w", len(b), ErrMalformed)
	}
	r := reply{op: Opcode(binary.BigEndian.Uint16(b))}
	switch r.op {
	case OpAck:
		r.block = binary.BigEndian.Uint16(b[2:])
	case OpError:
		r.code = ErrorCode(binary.BigEndian.Uint16(b[2:]))
		msg := b[4:]
		if i := bytes.IndexByte(msg, 0); i >= 0 {
			msg = msg[:i]
		}
		r.msg = string(msg)
	default:
		return reply{}, fmt.Errorf("parse reply: opcode %d: %w", r.op, ErrMalformed)
	}
	return r, nil
}
