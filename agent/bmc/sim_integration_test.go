//go:build integration

package bmc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
	"github.com/rackboot/rackboot/agent/bmc"
	"github.com/rackboot/rackboot/power"
	"github.com/rackboot/rackboot/power/powertest"
)

// lanConn is a Conn over lanplus: the same request bytes the agent sends
// through /dev/ipmi0, carried by go-ipmi to a BMC on the network, so
// Discover and Enroll run against a real BMC implementation.
type lanConn struct{ c *client.Client }

func dialSim(t *testing.T, sim *powertest.Sim) *lanConn {
	t.Helper()
	c, err := client.NewClient(sim.Host, sim.Port, sim.User, sim.Password)
	if err != nil {
		t.Fatal(err)
	}
	c.WithTimeout(3 * time.Second).WithRetry(1).WithCipherSuiteID(power.IPMICipherSuites...).
		WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("open session: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c.Close(ctx)
	})
	return &lanConn{c: c}
}

func (l *lanConn) Command(ctx context.Context, netfn, cmd byte, data []byte) ([]byte, error) {
	res, err := l.c.RawCommand(ctx, types.NetFn(netfn), cmd, data, "raw")
	var re *types.ResponseError
	if errors.As(err, &re) && re.CompletionCode() != 0 {
		return nil, &bmc.CompletionError{NetFn: netfn, Cmd: cmd, Code: byte(re.CompletionCode())}
	}
	if err != nil {
		return nil, err
	}
	return res.Response, nil
}

func TestSim(t *testing.T) {
	sim := powertest.StartSim(t, "admin", "s3cret-pw")
	conn := dialSim(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	lan, err := bmc.Discover(ctx, conn)
	if err != nil {
		t.Fatalf("Discover: %v\n%s", err, sim.Log())
	}
	if lan.Channel != 1 || lan.Address.String() != sim.Host || lan.MAC.String() != sim.MAC.String() {
		t.Fatalf("Discover: %+v, want channel 1, %s, %s", lan, sim.Host, sim.MAC)
	}

	first, err := bmc.Enroll(ctx, conn, lan.Channel, "rackboot")
	if err != nil {
		t.Fatalf("Enroll: %v\n%s", err, sim.Log())
	}
	if first.UserID < 3 || first.Name != "rackboot" || len(first.Password) != 16 {
		t.Fatalf("Enroll: %+v", first)
	}
	as := func(user, password string) (string, error) {
		s := *sim
		s.User, s.Password = user, password
		return s.IPMITool("chassis", "power", "status")
	}
	if out, err := as(first.Name, first.Password); err != nil || !strings.Contains(out, "Chassis Power is") {
		t.Fatalf("ipmitool as the enrolled user: %q, %v", out, err)
	}
	// The site's admin is untouched.
	if _, err := as("admin", "s3cret-pw"); err != nil {
		t.Fatalf("ipmitool as the site's admin after Enroll: %v", err)
	}

	t.Logf("discovered %+v; enrolled user %d", lan, first.UserID)
	second, err := bmc.Enroll(ctx, conn, lan.Channel, "rackboot")
	if err != nil {
		t.Fatalf("second Enroll: %v", err)
	}
	if second.UserID != first.UserID || second.Password == first.Password {
		t.Fatalf("second Enroll: slot %d (first %d), password changed: %v", second.UserID, first.UserID, second.Password != first.Password)
	}
	if out, err := as(second.Name, second.Password); err != nil || !strings.Contains(out, "Chassis Power is") {
		t.Fatalf("ipmitool with the new password: %q, %v", out, err)
	}
	if out, err := as(first.Name, first.Password); err == nil {
		t.Fatalf("ipmitool with the old password still works: %q", out)
	}
}
