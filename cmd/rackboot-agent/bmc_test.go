package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rackboot/rackboot/agent/bmc"
	"github.com/rackboot/rackboot/agent/inventory"
)

// fakeDevice is a BMC with a LAN channel 1 at ip (0.0.0.0 when nil) and
// three user slots, of which 1 and 2 are taken; fail answers everything
// with an I/O error.
type fakeDevice struct {
	ip     []byte
	fail   bool
	closed bool
	wrote  bool // a Set User command came
}

func (f *fakeDevice) Close() error { f.closed = true; return nil }

func (f *fakeDevice) Command(_ context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	if f.fail {
		return nil, errors.New("ipmi netfn 0x06 cmd 0x42: no response from the BMC")
	}
	refuse := &bmc.CompletionError{NetFn: netfn, Cmd: cmd, Code: bmc.CodeInvalidData}
	switch {
	case netfn == bmc.NetFnApp && cmd == 0x42:
		if data[0] != 1 {
			return nil, refuse
		}
		return []byte{1, 0x04, 0x01, 0, 0, 0, 0, 0, 0}, nil
	case netfn == bmc.NetFnTransport && cmd == 0x02 && data[1] == 3:
		return append([]byte{0x11}, f.ip...), nil
	case netfn == bmc.NetFnTransport && cmd == 0x02 && data[1] == 5:
		return []byte{0x11, 0x02, 0x00, 0x1B, 0x3C, 0x00, 0x01}, nil
	case netfn == bmc.NetFnApp && cmd == 0x44:
		return []byte{3, 2, 1, 0x04}, nil
	case netfn == bmc.NetFnApp && cmd == 0x46:
		names := map[byte]string{1: "", 2: "admin", 3: ""}
		b := make([]byte, 16)
		copy(b, names[data[0]])
		return b, nil
	case netfn == bmc.NetFnApp && (cmd == 0x45 || cmd == 0x47 || cmd == 0x43):
		f.wrote = true
		return nil, nil
	}
	return nil, refuse
}

func TestAddBMC(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(context.Context) (bmcDevice, error)
		want inventory.Inventory
	}{
		{
			name: "a BMC on its LAN",
			open: func(context.Context) (bmcDevice, error) { return &fakeDevice{ip: []byte{10, 0, 0, 21}}, nil },
			want: inventory.Inventory{BMCAddress: "10.0.0.21", BMCMAC: "02:00:1b:3c:00:01"},
		},
		{
			name: "no IPMI device",
			open: func(context.Context) (bmcDevice, error) {
				return nil, fmt.Errorf("open ipmi device: %w", bmc.ErrNoDevice)
			},
		},
		{
			name: "a device that cannot be opened",
			open: func(context.Context) (bmcDevice, error) {
				return nil, errors.New("open ipmi device /dev/ipmi0: permission denied")
			},
			want: inventory.Inventory{Warnings: []string{"bmc: open ipmi device /dev/ipmi0: permission denied"}},
		},
		{
			name: "a BMC that does not answer",
			open: func(context.Context) (bmcDevice, error) { return &fakeDevice{fail: true}, nil },
			want: inventory.Inventory{Warnings: []string{"bmc: discover lan channel: get channel info 1: ipmi netfn 0x06 cmd 0x42: no response from the BMC"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inv inventory.Inventory
			addBMC(context.Background(), &inv, tc.open)
			if diff := cmp.Diff(tc.want, inv); diff != "" {
				t.Errorf("inventory (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnrollBMC(t *testing.T) {
	d := &fakeDevice{ip: []byte{10, 0, 0, 21}}
	e, err := enrollBMC(context.Background(), func(context.Context) (bmcDevice, error) { return d, nil })
	if err != nil {
		t.Fatal(err)
	}
	if e.Address != "10.0.0.21" || e.Channel != 1 || e.User != "rackboot" || e.UserID != 3 || len(e.Password) != 16 || !d.closed {
		t.Errorf("enrollment %+v, device closed %v", e, d.closed)
	}
	// With no address to reach it on, the BMC gets no user.
	d = &fakeDevice{ip: []byte{0, 0, 0, 0}}
	_, err = enrollBMC(context.Background(), func(context.Context) (bmcDevice, error) { return d, nil })
	if err == nil || !strings.Contains(err.Error(), "no address") || d.wrote {
		t.Errorf("enroll on a BMC with no address: %v, a user written: %v", err, d.wrote)
	}
}
