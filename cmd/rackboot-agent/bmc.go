package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/rackboot/rackboot/agent/bmc"
	"github.com/rackboot/rackboot/agent/inventory"
	"github.com/rackboot/rackboot/agent/kmod"
	"github.com/rackboot/rackboot/agent/protocol"
)

// bmcModules give the in-band interface: ipmi_si finds the BMC's KCS,
// SMIC or BT registers (from SMBIOS or ACPI) and ipmi_devintf makes
// /dev/ipmi0 of it; ipmi_msghandler comes with them as their dependency.
var bmcModules = []string{"ipmi_devintf", "ipmi_si"}

// bmcUser is the user the agent enrolls on a node's BMC.
const bmcUser = "rackboot"

// bmcTimeout bounds all the talk with the BMC for one inventory or one
// enrollment: a wedged BMC must not hold the inspection up for long.
const bmcTimeout = time.Minute

// loadBMCModules loads the in-band IPMI drivers. A machine with no BMC
// (a VM, a workstation) has nothing for ipmi_si to bind to: that is
// said, and is not a failure.
func loadBMCModules(l *kmod.Loader, log *slog.Logger) {
	res, err := l.Load(bmcModules...)
	if err != nil {
		log.Info("no in-band BMC driver", "err", err)
		return
	}
	for _, f := range res.Failed {
		log.Info("in-band BMC driver not loaded (normal on a machine with no BMC)", "module", f.Module, "reason", f.Reason)
	}
}

// bmcDevice is an open in-band interface.
type bmcDevice interface {
	bmc.Conn
	Close() error
}

// openBMC opens the machine's in-band interface.
func openBMC(ctx context.Context) (bmcDevice, error) {
	d, err := bmc.Open(ctx)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// addBMC fills inv's BMC fields from what the BMC reports of its LAN
// channel. A machine with no IPMI device has no BMC to report and gets
// nothing; a device that fails gets a warning.
func addBMC(ctx context.Context, inv *inventory.Inventory, open func(context.Context) (bmcDevice, error)) {
	ctx, cancel := context.WithTimeout(ctx, bmcTimeout)
	defer cancel()
	d, err := open(ctx)
	if errors.Is(err, bmc.ErrNoDevice) || errors.Is(err, errors.ErrUnsupported) {
		return
	}
	if err != nil {
		inv.Warnings = append(inv.Warnings, "bmc: "+err.Error())
		return
	}
	defer d.Close()
	lan, err := bmc.Discover(ctx, d)
	if err != nil {
		inv.Warnings = append(inv.Warnings, "bmc: discover lan channel: "+err.Error())
		return
	}
	if lan.Address.IsValid() {
		inv.BMCAddress = lan.Address.String()
	}
	if lan.V6Address.IsValid() {
		inv.BMCV6Address = lan.V6Address.String()
	}
	if len(lan.MAC) > 0 {
		inv.BMCMAC = strings.ToLower(lan.MAC.String())
	}
}

// enrollBMC creates or refreshes rackboot's user on the BMC's LAN
// channel. A BMC that reports no address on it gets no user: the server
// could not reach it with one.
func enrollBMC(ctx context.Context, open func(context.Context) (bmcDevice, error)) (protocol.BMCEnrollment, error) {
	ctx, cancel := context.WithTimeout(ctx, bmcTimeout)
	defer cancel()
	d, err := open(ctx)
	if err != nil {
		return protocol.BMCEnrollment{}, err
	}
	defer d.Close()
	lan, err := bmc.Discover(ctx, d)
	if err != nil {
		return protocol.BMCEnrollment{}, fmt.Errorf("discover bmc lan channel: %w", err)
	}
	addr := lan.Address
	if !addr.IsValid() {
		addr = lan.V6Address
	}
	if !addr.IsValid() {
		return protocol.BMCEnrollment{}, fmt.Errorf("the bmc reports no address on lan channel %d", lan.Channel)
	}
	e, err := bmc.Enroll(ctx, d, lan.Channel, bmcUser)
	if err != nil {
		return protocol.BMCEnrollment{}, err
	}
	return protocol.BMCEnrollment{Address: addr.String(), Channel: lan.Channel, User: e.Name, UserID: e.UserID, Password: e.Password,
		LANAccess: lan.Access}, nil
}
