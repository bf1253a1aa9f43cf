package power

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/rmcpplus"
	"github.com/bougou/go-ipmi/pkg/types"
)

// IPMICipherSuites are the RMCP+ cipher suites rackboot offers, best
// first: 17 (HMAC-SHA256 authentication, HMAC-SHA256-128 integrity,
// AES-CBC-128) and 3 (the SHA-1 forms of the same). Never 0 (no
// authentication, the "cipher zero" hole) nor 1 and 2 (no encryption).
var IPMICipherSuites = []types.CipherSuiteID{types.CipherSuiteID17, types.CipherSuiteID3}

// ipmiDriver is a BMC over IPMI v2.0 lanplus (RMCP+). Every call opens a
// session, runs its commands and closes the session again: no session is
// held between calls (BMCs have few and time them out anyway).
type ipmiDriver struct {
	e    Endpoint
	c    Config
	name string
}

func newIPMI(e Endpoint, c Config) (*ipmiDriver, error) {
	d := &ipmiDriver{e: e, c: c, name: e.String()}
	if len(c.User) > rmcpplus.MaxUserNameLength {
		return nil, &BMCError{BMC: d.name, Op: "connect", Err: fmt.Errorf("user name is %d characters, IPMI allows %d", len(c.User), rmcpplus.MaxUserNameLength)}
	}
	if len(c.Password) > 20 {
		return nil, &BMCError{BMC: d.name, Op: "connect", Err: fmt.Errorf("password is %d bytes, IPMI v2.0 allows 20", len(c.Password))}
	}
	return d, nil
}

// classify turns go-ipmi's errors into the package's. Its session setup
// joins the error of each cipher suite tried with %v, which cuts the
// chain: those are recognised by their text.
func classify(err error) error {
	var op *net.OpError
	var st *types.RmcpStatusError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrRAKPAuthentication),
		errors.As(err, &st) && (st.StatusCode() == types.RmcpStatusCodeUnauthorizedName || st.StatusCode() == types.RmcpStatusCodeInvalidIntegrityCheckValue),
		containsAny(err.Error(), client.ErrRAKPAuthentication.Error(), types.RmcpStatusCodeUnauthorizedName.String(), types.RmcpStatusCodeInvalidIntegrityCheckValue.String()):
		return fmt.Errorf("%w: %w", ErrAuth, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED),
		errors.As(err, &op) && op.Timeout(),
		containsAny(err.Error(), "no datagram matched", "before UDP read deadline", "connection refused"):
		return noAnswer(err)
	}
	return err
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// session runs f in a fresh RMCP+ session. When safe is false (cycle,
// reset) a command that failed after it was sent is not tried again: the
// BMC may have done it, and a second cycle is a second outage.
func (d *ipmiDriver) session(ctx context.Context, op string, safe bool, f func(context.Context, *client.Client) error) error {
	return retry(ctx, d.c, d.name, op, func(ctx context.Context) error {
		c, err := client.NewClient(d.e.Host, d.e.Port, d.c.User, d.c.Password)
		if err != nil {
			return final{err}
		}
		deadline, _ := ctx.Deadline()
		c.WithTimeout(time.Until(deadline)).WithRetry(0).WithCipherSuiteID(IPMICipherSuites...).
			WithMaxPrivilegeLevel(types.PrivilegeLevelAdministrator)
		connected := false
		defer func() {
			// Closing sends Close Session and closes the socket; give it a
			// moment of its own, even when ctx ran out, so the BMC's
			// session slot is freed when it can be.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			if connected {
				c.Close(cctx)
			} else {
				// No session to close: only the socket.
				closeCtx, cancel := context.WithCancel(cctx)
				cancel()
				c.Close(closeCtx)
			}
		}()
		if err := c.Connect(ctx); err != nil {
			return fmt.Errorf("open session: %w", classify(err))
		}
		connected = true
		err = classify(f(ctx, c))
		if err != nil && !safe && errors.Is(err, ErrNoAnswer) {
			return final{fmt.Errorf("%w; not tried again, since the BMC may have done it: check the power state", err)}
		}
		return err
	})
}

func (d *ipmiDriver) status(ctx context.Context, c *client.Client) (State, error) {
	st, err := c.GetChassisStatus(ctx)
	if err != nil {
		return "", fmt.Errorf("get chassis status: %w", err)
	}
	if st.PowerIsOn {
		return StateOn, nil
	}
	return StateOff, nil
}

func (d *ipmiDriver) State(ctx context.Context) (State, error) {
	var s State
	err := d.session(ctx, "power state", true, func(ctx context.Context, c *client.Client) error {
		var err error
		s, err = d.status(ctx, c)
		return err
	})
	return s, err
}

func (d *ipmiDriver) control(ctx context.Context, c *client.Client, cc chassis.ChassisControl) error {
	if _, err := c.ChassisControl(ctx, cc); err != nil {
		return fmt.Errorf("chassis control %d: %w", cc, err)
	}
	return nil
}

func (d *ipmiDriver) On(ctx context.Context) error {
	return d.session(ctx, "power on", true, func(ctx context.Context, c *client.Client) error {
		return d.control(ctx, c, chassis.ChassisControlPowerUp)
	})
}

func (d *ipmiDriver) Off(ctx context.Context) error {
	return d.session(ctx, "power off", true, func(ctx context.Context, c *client.Client) error {
		return d.control(ctx, c, chassis.ChassisControlPowerDown)
	})
}

// SoftOff asks the OS to shut down (ACPI); a node that is off is left
// alone (some BMCs refuse a soft shutdown then).
func (d *ipmiDriver) SoftOff(ctx context.Context) error {
	return d.session(ctx, "soft off", true, func(ctx context.Context, c *client.Client) error {
		if s, err := d.status(ctx, c); err != nil || s == StateOff {
			return err
		}
		return d.control(ctx, c, chassis.ChassisControlSoftShutdown)
	})
}

// Cycle powers an off node on (IPMI's power cycle does nothing to a node
// that is off), and power-cycles a node that is on.
func (d *ipmiDriver) Cycle(ctx context.Context) error {
	return d.onOr(ctx, "power cycle", chassis.ChassisControlPowerCycle)
}

// Reset hard-resets a node that is on and powers on one that is off.
func (d *ipmiDriver) Reset(ctx context.Context) error {
	return d.onOr(ctx, "reset", chassis.ChassisControlHardReset)
}

func (d *ipmiDriver) onOr(ctx context.Context, op string, cc chassis.ChassisControl) error {
	return d.session(ctx, op, false, func(ctx context.Context, c *client.Client) error {
		s, err := d.status(ctx, c)
		if err != nil {
			// Nothing was done yet: safe to try again.
			return err
		}
		if s == StateOff {
			cc = chassis.ChassisControlPowerUp
		}
		return d.control(ctx, c, cc)
	})
}

func (d *ipmiDriver) SetBootDevice(ctx context.Context, b Boot) error {
	sel := types.BootDeviceSelectorForcePXE
	switch b.Device {
	case DevicePXE:
	case DeviceDisk:
		sel = types.BootDeviceSelectorForceHardDrive
	default:
		_, err := ParseDevice(string(b.Device))
		return &BMCError{BMC: d.name, Op: "set boot device", Err: err}
	}
	bt := types.BIOSBootTypeLegacy
	if b.UEFI {
		bt = types.BIOSBootTypeEFI
	}
	return d.session(ctx, "set boot device", true, func(ctx context.Context, c *client.Client) error {
		// Set-in-progress brackets the write as ipmitool does; BMCs that
		// lack it answer with an error that changes nothing.
		inProgress := c.SetBootParamSetInProgress(ctx, types.SetInProgress_SetInProgress) == nil
		err := c.SetBootDevice(ctx, sel, bt, b.Persistent)
		if inProgress {
			c.SetBootParamSetInProgress(ctx, types.SetInProgress_SetComplete)
		}
		if err != nil {
			return fmt.Errorf("set boot flags: %w", err)
		}
		return nil
	})
}

// Close implements Driver: the IPMI driver holds no session between calls.
func (d *ipmiDriver) Close() error { return nil }
