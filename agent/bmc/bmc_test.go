package bmc

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// req is one request as the fake saw it.
type req struct {
	NetFn, Cmd byte
	Data       []byte
}

func (r req) key() string { return fmt.Sprintf("%02x %02x % x", r.NetFn, r.Cmd, r.Data) }

// fakeBMC answers from a table keyed by "netfn cmd data" in hex; a
// request it has no answer for gets 0xc1 (invalid command), and an
// answer of one byte above 0x00 in codes is that completion code.
type fakeBMC struct {
	answers map[string][]byte
	codes   map[string]byte
	// users are slot names, for the user commands, 1-based; nil when
	// the table answers them.
	users []string
	seen  []req
}

func (f *fakeBMC) Command(_ context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	r := req{netfn, cmd, append([]byte(nil), data...)}
	f.seen = append(f.seen, r)
	if c, ok := f.codes[r.key()]; ok {
		return nil, &CompletionError{NetFn: netfn, Cmd: cmd, Code: c}
	}
	if a, ok := f.answers[r.key()]; ok {
		return a, nil
	}
	if f.users != nil && netfn == NetFnApp {
		switch cmd {
		case cmdGetUserAccess:
			return []byte{byte(len(f.users)), 1, 1, 0x04}, nil
		case cmdGetUserName:
			if id := int(data[0]); id >= 1 && id <= len(f.users) {
				return pad(f.users[id-1], 16), nil
			}
			return nil, &CompletionError{NetFn: netfn, Cmd: cmd, Code: CodeInvalidData}
		case cmdSetUserName:
			f.users[data[0]-1] = string(bytes.TrimRight(data[1:], "\x00"))
			return nil, nil
		case cmdSetUserPassword, cmdSetUserAccess:
			return nil, nil
		}
	}
	return nil, &CompletionError{NetFn: netfn, Cmd: cmd, Code: CodeInvalidCommand}
}

// lanAnswers is a LAN channel ch with IPv4 ip (nil: 0.0.0.0) and mac.
func lanAnswers(m map[string][]byte, ch byte, ip net.IP, mac string) {
	m[fmt.Sprintf("06 42 %02x", ch)] = []byte{ch, 0x04, 0x01, 0x80, 0xf2, 0x1b, 0x00, 0x00, 0x00}
	v4 := []byte{0, 0, 0, 0}
	if ip != nil {
		v4 = ip.To4()
	}
	m[fmt.Sprintf("0c 02 %02x 03 00 00", ch)] = append([]byte{0x11}, v4...)
	m[fmt.Sprintf("0c 02 %02x 04 00 00", ch)] = []byte{0x11, 0x01}
	hw, _ := net.ParseMAC(mac)
	m[fmt.Sprintf("0c 02 %02x 05 00 00", ch)] = append([]byte{0x11}, hw...)
}

func v6Set(set, source byte, addr string, prefix, status byte) []byte {
	a := netip.MustParseAddr(addr).As16()
	b := append([]byte{0x11, set, source}, a[:]...)
	return append(b, prefix, status)
}

func TestDiscover(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(m map[string][]byte, codes map[string]byte)
		want    LAN
		wantErr error
	}{
		{
			name: "LAN on channel 1",
			setup: func(m map[string][]byte, _ map[string]byte) {
				lanAnswers(m, 1, net.IPv4(10, 0, 0, 21), "02:00:1b:3c:00:01")
			},
			want: LAN{Channel: 1, Address: netip.MustParseAddr("10.0.0.21"), AddressSource: "static", MAC: mac("02:00:1b:3c:00:01")},
		},
		{
			// An iDRAC as shipped: IPMI over LAN off on its channel.
			name: "IPMI over LAN disabled",
			setup: func(m map[string][]byte, _ map[string]byte) {
				lanAnswers(m, 1, net.IPv4(10, 0, 0, 22), "02:00:1b:3c:00:02")
				m["06 41 01 80"] = []byte{0x20, 0x04} // PEF alerting off, access disabled
			},
			want: LAN{Channel: 1, Address: netip.MustParseAddr("10.0.0.22"), AddressSource: "static", MAC: mac("02:00:1b:3c:00:02"), Access: "disabled"},
		},
		{
			name: "LAN on channel 8 after a serial channel",
			setup: func(m map[string][]byte, _ map[string]byte) {
				m["06 42 02"] = []byte{0x02, 0x05, 0x02, 0x00} // RS-232
				lanAnswers(m, 8, net.IPv4(192, 168, 7, 9), "aa:bb:cc:dd:ee:ff")
			},
			want: LAN{Channel: 8, Address: netip.MustParseAddr("192.168.7.9"), AddressSource: "static", MAC: mac("aa:bb:cc:dd:ee:ff")},
		},
		{
			name: "IPv4 0.0.0.0 with an IPv6 address",
			setup: func(m map[string][]byte, _ map[string]byte) {
				lanAnswers(m, 1, nil, "02:00:00:00:00:01")
				m["0c 02 01 32 00 00"] = []byte{0x11, 0x03}
				m["0c 02 01 33 00 00"] = []byte{0x11, 0x02}
				m["0c 02 01 37 00 00"] = []byte{0x11, 2, 2, 0}
				// A disabled static address, then a link-local dynamic one,
				// then the one to take.
				m["0c 02 01 38 00 00"] = v6Set(0, 0x00, "2001:db8::5", 64, 0)
				m["0c 02 01 38 01 00"] = v6Set(1, 0x80, "2001:db8::6", 64, 1)
				m["0c 02 01 3b 00 00"] = v6Set(0, 0x01, "fe80::1", 64, 0)
				m["0c 02 01 3b 01 00"] = v6Set(1, 0x01, "2001:db8::aa", 64, 0)
			},
			want: LAN{Channel: 1, AddressSource: "static", V6Address: netip.MustParseAddr("2001:db8::aa"), MAC: mac("02:00:00:00:00:01")},
		},
		{
			name: "IPv6 sets counted until an error",
			setup: func(m map[string][]byte, _ map[string]byte) {
				lanAnswers(m, 1, nil, "02:00:00:00:00:01")
				m["0c 02 01 32 00 00"] = []byte{0x11, 0x02}
				m["0c 02 01 38 00 00"] = v6Set(0, 0x80, "::", 0, 0)
				m["0c 02 01 38 01 00"] = v6Set(1, 0x80, "fd00::7", 64, 0)
			},
			want: LAN{Channel: 1, AddressSource: "static", V6Address: netip.MustParseAddr("fd00::7"), MAC: mac("02:00:00:00:00:01")},
		},
		{
			name: "an IPv4 channel is preferred to an earlier IPv6-only one",
			setup: func(m map[string][]byte, _ map[string]byte) {
				lanAnswers(m, 1, nil, "02:00:00:00:00:01")
				m["0c 02 01 32 00 00"] = []byte{0x11, 0x01}
				m["0c 02 01 38 00 00"] = v6Set(0, 0x80, "2001:db8::1", 64, 0)
				lanAnswers(m, 2, net.IPv4(10, 1, 1, 1), "02:00:00:00:00:02")
			},
			want: LAN{Channel: 2, Address: netip.MustParseAddr("10.1.1.1"), AddressSource: "static", MAC: mac("02:00:00:00:00:02")},
		},
		{
			name: "BMC answering 0xc1 to the IPv6 parameters",
			setup: func(m map[string][]byte, codes map[string]byte) {
				lanAnswers(m, 1, net.IPv4(10, 0, 0, 5), "02:00:00:00:00:05")
				codes["0c 02 01 32 00 00"] = CodeInvalidCommand
			},
			want: LAN{Channel: 1, Address: netip.MustParseAddr("10.0.0.5"), AddressSource: "static", MAC: mac("02:00:00:00:00:05")},
		},
		{
			name: "a LAN channel with no address at all",
			setup: func(m map[string][]byte, codes map[string]byte) {
				lanAnswers(m, 3, nil, "02:00:00:00:00:03")
				codes["0c 02 03 32 00 00"] = CodeParamNotSupported
			},
			want: LAN{Channel: 3, AddressSource: "static", MAC: mac("02:00:00:00:00:03")},
		},
		{
			name: "no LAN channel",
			setup: func(m map[string][]byte, _ map[string]byte) {
				m["06 42 02"] = []byte{0x02, 0x05, 0x02, 0x00}
			},
			wantErr: ErrNoLAN,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeBMC{answers: map[string][]byte{}, codes: map[string]byte{}}
			tc.setup(f.answers, f.codes)
			got, err := Discover(context.Background(), f)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Discover: %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Discover (-want +got):\n%s", diff)
			}
		})
	}
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// TestDiscoverDeviceFailure: a device that fails (not a refusal) is the
// caller's error, not "no LAN".
func TestDiscoverDeviceFailure(t *testing.T) {
	_, err := Discover(context.Background(), connFunc(func(context.Context, byte, byte, []byte) ([]byte, error) {
		return nil, errors.New("no response from the BMC")
	}))
	if err == nil || errors.Is(err, ErrNoLAN) || !strings.Contains(err.Error(), "get channel info 1") {
		t.Fatalf("Discover: %v", err)
	}
}

type connFunc func(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error)

func (f connFunc) Command(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	return f(ctx, netfn, cmd, data)
}

func TestEnroll(t *testing.T) {
	name16 := func(s string) []byte { return pad(s, 16) }
	for _, tc := range []struct {
		name    string
		users   []string
		channel int
		wantID  int
		// want are the requests after the slot scan, with the password
		// bytes as "PW".
		want    []req
		wantErr error
	}{
		{
			name:    "reuse of an existing rackboot slot",
			users:   []string{"", "admin", "", "rackboot", ""},
			channel: 1,
			wantID:  4,
			want: []req{
				{0x06, 0x44, []byte{1, 1}},
				{0x06, 0x46, []byte{1}}, {0x06, 0x46, []byte{2}}, {0x06, 0x46, []byte{3}}, {0x06, 0x46, []byte{4}},
				{0x06, 0x47, append([]byte{4, 0x02}, []byte("PW")...)},
				{0x06, 0x47, []byte{4, 0x01}},
				{0x06, 0x43, []byte{0x91, 4, 0x04, 0x00}},
			},
		},
		{
			name:    "first empty slot from 3",
			users:   []string{"", "", "ops", "", ""},
			channel: 8,
			wantID:  4,
			want: []req{
				{0x06, 0x44, []byte{8, 1}},
				{0x06, 0x46, []byte{1}}, {0x06, 0x46, []byte{2}}, {0x06, 0x46, []byte{3}}, {0x06, 0x46, []byte{4}}, {0x06, 0x46, []byte{5}},
				{0x06, 0x45, append([]byte{4}, name16("rackboot")...)},
				{0x06, 0x47, append([]byte{4, 0x02}, []byte("PW")...)},
				{0x06, 0x47, []byte{4, 0x01}},
				{0x06, 0x43, []byte{0x98, 4, 0x04, 0x00}},
			},
		},
		{
			name:    "every slot taken",
			users:   []string{"", "admin", "ops", "monitor"},
			channel: 1,
			want: []req{
				{0x06, 0x44, []byte{1, 1}},
				{0x06, 0x46, []byte{1}}, {0x06, 0x46, []byte{2}}, {0x06, 0x46, []byte{3}}, {0x06, 0x46, []byte{4}},
			},
			wantErr: ErrNoFreeSlot,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeBMC{users: append([]string(nil), tc.users...)}
			got, err := Enroll(context.Background(), f, tc.channel, "rackboot")
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Enroll: %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				if got.UserID != tc.wantID || got.Name != "rackboot" || len(got.Password) != 16 {
					t.Errorf("Enroll: %+v, want user id %d", got, tc.wantID)
				}
				if f.users[tc.wantID-1] != "rackboot" {
					t.Errorf("slot %d is named %q", tc.wantID, f.users[tc.wantID-1])
				}
			}
			// The password request carries the returned password, NUL
			// padded to 16 bytes.
			seen := append([]req(nil), f.seen...)
			for i, r := range seen {
				if r.Cmd == cmdSetUserPassword && len(r.Data) == 18 {
					if !bytes.Equal(r.Data[2:], pad(got.Password, 16)) {
						t.Errorf("password sent % x, returned %q", r.Data[2:], got.Password)
					}
					seen[i].Data = append(r.Data[:2:2], "PW"...)
				}
			}
			if diff := cmp.Diff(tc.want, seen); diff != "" {
				t.Errorf("requests (-want +got):\n%s", diff)
			}
			// No slot but the chosen one was renamed.
			for i, u := range f.users {
				if i+1 != tc.wantID && u != tc.users[i] {
					t.Errorf("slot %d renamed %q to %q", i+1, tc.users[i], u)
				}
			}
		})
	}
}

func TestEnrollRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "seventeen-chars-x", "tab\tname", "ütf8"} {
		f := &fakeBMC{users: []string{"", "", ""}}
		if _, err := Enroll(context.Background(), f, 1, name); err == nil || len(f.seen) != 0 {
			t.Errorf("Enroll(%q): %v after %d requests, want an error before any", name, err, len(f.seen))
		}
	}
}

func TestEnrollStopsAtARefusal(t *testing.T) {
	f := &fakeBMC{users: []string{"", "", ""}, codes: map[string]byte{"06 43 91 03 04 00": CodeInsufficientPriv}}
	_, err := Enroll(context.Background(), f, 1, "rackboot")
	if !IsCode(err, CodeInsufficientPriv) || !strings.Contains(err.Error(), "insufficient privilege") {
		t.Fatalf("Enroll: %v", err)
	}
}

func TestPassword(t *testing.T) {
	seen := map[rune]bool{}
	for range 200 {
		pw, err := Password(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if len(pw) != 16 {
			t.Fatalf("password %q is %d characters", pw, len(pw))
		}
		for _, r := range pw {
			if !strings.ContainsRune(alphabet, r) {
				t.Fatalf("password %q has %q", pw, r)
			}
			seen[r] = true
		}
	}
	if len(seen) != 62 {
		t.Errorf("200 passwords used %d of the 62 characters", len(seen))
	}
	// Bytes from 248 up are dropped, not folded onto the first letters.
	pw, err := Password(bytes.NewReader(append(bytes.Repeat([]byte{255, 248}, 16), make([]byte, 32)...)))
	if err != nil || pw != strings.Repeat("A", 16) {
		t.Errorf("Password over 248..255 then zeros: %q %v", pw, err)
	}
}

func TestCompletionErrorNamesTheCode(t *testing.T) {
	for code, want := range map[byte]string{0xc1: "invalid command", 0xcc: "invalid data field", 0x80: "parameter not supported", 0xd4: "insufficient privilege", 0x42: "unknown"} {
		err := error(&CompletionError{NetFn: 0x06, Cmd: 0x42, Code: code})
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("0x%02x", code)) {
			t.Errorf("code 0x%02x: %q", code, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{0x01, 0x04, 0x01})
	f.Add(v6Set(0, 0x80, "2001:db8::1", 64, 0)[1:])
	f.Add(pad("rackboot", 16))
	f.Add([]byte{0x0a, 0x02, 0x01, 0x04})
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseChannelMedium(b)
		if a, err := ParseIPv4(b); err == nil && a.IsValid() && !a.Is4() {
			t.Fatalf("ParseIPv4 % x: %v", b, a)
		}
		if m, err := ParseMAC(b); err == nil && len(m) != 6 {
			t.Fatalf("ParseMAC % x: %v", b, m)
		}
		if a, err := ParseIPv6Address(b); err == nil {
			a.usable(true)
		}
		if n, err := ParseUserName(b); err == nil && (len(n) > 16 || strings.ContainsRune(n, 0)) {
			t.Fatalf("ParseUserName % x: %q", b, n)
		}
		if max, fixed, err := ParseUserAccess(b); err == nil && (max < 1 || max > 63 || fixed > 63) {
			t.Fatalf("ParseUserAccess % x: %d %d", b, max, fixed)
		}
	})
}
