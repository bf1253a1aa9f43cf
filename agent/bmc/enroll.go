package bmc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// ErrNoFreeSlot is a BMC whose every user slot is taken by another name.
var ErrNoFreeSlot = errors.New("no free user slot on the BMC")

// Enrollment is the user Enroll wrote.
type Enrollment struct {
	UserID   int
	Name     string
	Password string
}

// nameLen and passwordLen are the IPMI user name and the 16-byte password
// form's sizes.
const (
	nameLen     = 16
	passwordLen = 16
	// firstFree is the lowest slot Enroll takes: 1 is the anonymous
	// (null) user and 2 is, on nearly every BMC, the site's admin.
	firstFree = 3
)

// Enroll gives user name a fresh random password and administrator
// access on a LAN channel: in the slot already named name when there is
// one, else in the first slot from 3 up with no name. It never takes a
// slot holding another name, so the site's users are left alone.
func Enroll(ctx context.Context, c Conn, channel int, name string) (Enrollment, error) {
	if err := checkName(name); err != nil {
		return Enrollment{}, fmt.Errorf("enroll bmc user: %w", err)
	}
	if channel < 1 || channel > 0x0f {
		return Enrollment{}, fmt.Errorf("enroll bmc user: channel %d is not 1..15", channel)
	}
	id, reuse, err := pickSlot(ctx, c, channel, name)
	if err != nil {
		return Enrollment{}, fmt.Errorf("enroll bmc user %s: %w", name, err)
	}
	pw, err := Password(rand.Reader)
	if err != nil {
		return Enrollment{}, fmt.Errorf("enroll bmc user %s: %w", name, err)
	}
	if !reuse {
		if _, err := c.Command(ctx, NetFnApp, cmdSetUserName, append([]byte{byte(id)}, pad(name, nameLen)...)); err != nil {
			return Enrollment{}, fmt.Errorf("set user name %d: %w", id, err)
		}
	}
	// Bit 7 of the id clear: the 16-byte password form.
	if _, err := c.Command(ctx, NetFnApp, cmdSetUserPassword, append([]byte{byte(id), 0x02}, pad(pw, passwordLen)...)); err != nil {
		return Enrollment{}, fmt.Errorf("set user password %d: %w", id, err)
	}
	if _, err := c.Command(ctx, NetFnApp, cmdSetUserPassword, []byte{byte(id), 0x01}); err != nil {
		return Enrollment{}, fmt.Errorf("enable user %d: %w", id, err)
	}
	// 0x80: change the bits of this byte; 0x10: IPMI messaging enabled;
	// then the id, privilege limit 4 (administrator), no session limit.
	if _, err := c.Command(ctx, NetFnApp, cmdSetUserAccess, []byte{0x90 | byte(channel), byte(id), 0x04, 0x00}); err != nil {
		return Enrollment{}, fmt.Errorf("set user access %d channel %d: %w", id, channel, err)
	}
	return Enrollment{UserID: id, Name: name, Password: pw}, nil
}

// pickSlot reads the slots' names and chooses one; reuse says it already
// holds name.
func pickSlot(ctx context.Context, c Conn, channel int, name string) (id int, reuse bool, err error) {
	resp, err := c.Command(ctx, NetFnApp, cmdGetUserAccess, []byte{byte(channel), 1})
	if err != nil {
		return 0, false, fmt.Errorf("get user access channel %d: %w", channel, err)
	}
	max, fixed, err := ParseUserAccess(resp)
	if err != nil {
		return 0, false, fmt.Errorf("get user access channel %d: %w", channel, err)
	}
	free := 0
	for id := 1; id <= max; id++ {
		resp, err := c.Command(ctx, NetFnApp, cmdGetUserName, []byte{byte(id)})
		if refused(err) {
			// A slot the BMC will not describe is not free.
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("get user name %d: %w", id, err)
		}
		got, err := ParseUserName(resp)
		if err != nil {
			return 0, false, fmt.Errorf("get user name %d: %w", id, err)
		}
		switch {
		case got == name && id > 1:
			return id, true, nil
		case got == "" && free == 0 && id >= firstFree && id > fixed:
			free = id
		}
	}
	if free == 0 {
		return 0, false, fmt.Errorf("%w (%d slots)", ErrNoFreeSlot, max)
	}
	return free, false, nil
}

// ParseUserAccess reads a Get User Access response: [max user ids,
// enabled ids, fixed-name ids, access]. It returns the number of slots
// and how many of the first are fixed (cannot be renamed).
func ParseUserAccess(resp []byte) (max, fixed int, err error) {
	if len(resp) < 4 {
		return 0, 0, fmt.Errorf("user access is %d bytes, want 4", len(resp))
	}
	max, fixed = int(resp[0]&0x3f), int(resp[2]&0x3f)
	if max == 0 {
		return 0, 0, errors.New("the BMC reports no user slots")
	}
	return max, fixed, nil
}

// ParseUserName reads a Get User Name response: 16 bytes, NUL padded.
func ParseUserName(resp []byte) (string, error) {
	if len(resp) < nameLen {
		return "", fmt.Errorf("user name is %d bytes, want %d", len(resp), nameLen)
	}
	b := resp[:nameLen]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b), nil
}

func checkName(name string) error {
	if len(name) < 1 || len(name) > nameLen {
		return fmt.Errorf("user name %q is %d bytes, want 1..%d", name, len(name), nameLen)
	}
	for i := 0; i < len(name); i++ {
		if name[i] < 0x20 || name[i] > 0x7e {
			return fmt.Errorf("user name %q is not printable ASCII", name)
		}
	}
	return nil
}

// pad is s NUL padded to n bytes.
func pad(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// Password draws 16 characters from [A-Za-z0-9] out of r: letters and
// digits only, since some BMCs' web and shell tools choke on the rest.
// Bytes from 248 up are dropped, so that every character is equally
// likely (248 is 4 × 62).
func Password(r io.Reader) (string, error) {
	out := make([]byte, 0, passwordLen)
	buf := make([]byte, 32)
	for len(out) < passwordLen {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", fmt.Errorf("draw password: %w", err)
		}
		for _, b := range buf {
			if b >= 248 || len(out) == passwordLen {
				continue
			}
			out = append(out, alphabet[b%62])
		}
	}
	return string(out), nil
}
