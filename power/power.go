// Package power drives nodes' baseboard management controllers: power
// state, on, off, graceful and hard resets, and the next boot device.
// Driver is the seam the API (and later the lifecycle, the poller and the
// power-on limiter) uses; Dial picks the driver a BMC's URL names:
// ipmi:// (IPMI v2.0 lanplus, RMCP+) or redfish:// (https, the
// certificate pinned or verified; redfish+http:// for labs).
//
// Every call takes a context and also bounds itself (Config.Timeout per
// attempt, Config.Attempts tries with backoff): a BMC that does not answer
// gives ErrNoAnswer, naming the BMC, never a hang.
package power

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// State is a node's power state as its BMC reports it.
type State string

// Power states.
const (
	StateOn  State = "on"
	StateOff State = "off"
)

// Action is what a user asks a BMC to do.
type Action string

// Power actions.
const (
	ActionOn      Action = "on"       // power on; nothing when already on
	ActionOff     Action = "off"      // hard power off; nothing when already off
	ActionSoftOff Action = "soft-off" // ask the OS to shut down (ACPI); returns at once
	ActionCycle   Action = "cycle"    // off, then on (on when off: IPMI BMCs differ, see Cycle)
	ActionReset   Action = "reset"    // hard reset, without a power-off
)

// Actions are the actions, in the order help texts list them.
var Actions = []Action{ActionOn, ActionOff, ActionSoftOff, ActionCycle, ActionReset}

// ParseAction checks a user's action name.
func ParseAction(s string) (Action, error) {
	for _, a := range Actions {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("power action %q: want on, off, soft-off, cycle or reset", s)
}

// Device is a boot device to force.
type Device string

// Boot devices.
const (
	DevicePXE  Device = "pxe"
	DeviceDisk Device = "disk"
)

// ParseDevice checks a user's boot device name.
func ParseDevice(s string) (Device, error) {
	switch Device(s) {
	case DevicePXE, DeviceDisk:
		return Device(s), nil
	}
	return "", fmt.Errorf("boot device %q: want pxe or disk", s)
}

// Boot is a boot device override.
type Boot struct {
	Device Device
	// Persistent keeps the override for every boot; otherwise the BMC
	// clears it after the next one.
	Persistent bool
	// UEFI asks for the UEFI boot path rather than legacy BIOS.
	UEFI bool
}

// String says what b asks for, as events record it: "boot device pxe,
// next boot, UEFI".
func (b Boot) String() string {
	r := "boot device " + string(b.Device)
	if b.Persistent {
		r += ", persistent"
	} else {
		r += ", next boot"
	}
	if b.UEFI {
		return r + ", UEFI"
	}
	return r + ", BIOS"
}

// Driver is one BMC. Methods are safe to call one at a time; Close ends
// whatever session the driver holds.
type Driver interface {
	State(ctx context.Context) (State, error)
	On(ctx context.Context) error
	Off(ctx context.Context) error
	SoftOff(ctx context.Context) error
	Cycle(ctx context.Context) error
	Reset(ctx context.Context) error
	SetBootDevice(ctx context.Context, b Boot) error
	Close() error
}

// Do runs an action on d.
func Do(ctx context.Context, d Driver, a Action) error {
	switch a {
	case ActionOn:
		return d.On(ctx)
	case ActionOff:
		return d.Off(ctx)
	case ActionSoftOff:
		return d.SoftOff(ctx)
	case ActionCycle:
		return d.Cycle(ctx)
	case ActionReset:
		return d.Reset(ctx)
	}
	_, err := ParseAction(string(a))
	return err
}

// Errors a driver returns, wrapped in a *BMCError.
var (
	// ErrNoAnswer: the BMC did not answer in time, or nothing listens there.
	ErrNoAnswer = errors.New("the BMC does not answer")
	// ErrAuth: the BMC refused the user name or password.
	ErrAuth = errors.New("the BMC refused the user name or password")
	// ErrUnsupported: rackboot has no driver for this BMC's kind yet.
	ErrUnsupported = errors.New("not supported")
)

// BMCError is a failed call to a BMC. It names the BMC and the operation.
type BMCError struct {
	BMC string // the URL, without credentials
	Op  string // "power on", "power state", "set boot device", "connect"
	Err error
}

func (e *BMCError) Error() string { return fmt.Sprintf("bmc %s: %s: %v", e.BMC, e.Op, e.Err) }
func (e *BMCError) Unwrap() error { return e.Err }

// Endpoint is a parsed BMC URL.
type Endpoint struct {
	// Kind is "ipmi" or "redfish".
	Kind string
	Host string
	Port int
	// HTTPS is false only for redfish+http:// (labs).
	HTTPS bool
	// System is a Redfish system's path (/redfish/v1/Systems/ID); empty
	// means the service's only system.
	System string
}

// String is the endpoint as a URL.
func (e Endpoint) String() string {
	hp := net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
	switch {
	case e.Kind == "ipmi":
		return "ipmi://" + hp
	case e.HTTPS:
		return "redfish://" + hp + e.System
	default:
		return "redfish+http://" + hp + e.System
	}
}

// ParseURL checks a BMC URL: ipmi://HOST[:PORT] (port 623 by default),
// redfish://HOST[:PORT][/redfish/v1/Systems/ID] (https, port 443) or
// redfish+http://... (port 80). Credentials never go in the URL.
func ParseURL(s string) (Endpoint, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("bmc url %q: %w", s, err)
	}
	bad := func(why string) (Endpoint, error) {
		return Endpoint{}, fmt.Errorf("bmc url %q: %s", s, why)
	}
	if u.User != nil {
		return bad("credentials do not go in the URL: give --bmc-user and --bmc-password-file")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return bad("no query or fragment, please")
	}
	e := Endpoint{Host: u.Hostname()}
	switch u.Scheme {
	case "ipmi":
		e.Kind, e.Port = "ipmi", 623
		if u.Path != "" && u.Path != "/" {
			return bad("an ipmi URL has no path")
		}
	case "redfish", "redfish+https":
		e.Kind, e.Port, e.HTTPS = "redfish", 443, true
	case "redfish+http":
		e.Kind, e.Port = "redfish", 80
	default:
		return bad("want ipmi://, redfish:// or redfish+http://")
	}
	if e.Host == "" {
		return bad("no host")
	}
	if e.Kind == "redfish" {
		p := strings.TrimSuffix(u.Path, "/")
		if p != "" && !strings.HasPrefix(p, "/redfish/v1/Systems/") || strings.Count(p, "/") > 4 {
			return bad("the path, if any, is /redfish/v1/Systems/ID")
		}
		e.System = p
	}
	if ps := u.Port(); ps != "" {
		p, err := strconv.Atoi(ps)
		if err != nil || p < 1 || p > 65535 {
			return bad("port " + ps + " out of range")
		}
		e.Port = p
	}
	return e, nil
}

// Config is how to reach one BMC.
type Config struct {
	URL      string
	User     string
	Password string
	// Fingerprint pins a Redfish BMC's certificate (hex SHA-256 of its
	// DER, colons allowed); CAFile, when no fingerprint is given, is the
	// PEM CA bundle to verify it with (default: the system's roots).
	Fingerprint string
	CAFile      string
	// Timeout bounds one attempt at one call (default 5s); Attempts is how
	// many tries a call gets before ErrNoAnswer (default 3), with backoff
	// between them (Backoff, doubling; default 500ms).
	Timeout  time.Duration
	Attempts int
	Backoff  time.Duration
	Logger   *slog.Logger
}

func (c Config) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 5 * time.Second
	}
	return c.Timeout
}

func (c Config) attempts() int {
	if c.Attempts <= 0 {
		return 3
	}
	return c.Attempts
}

func (c Config) backoff() time.Duration {
	if c.Backoff <= 0 {
		return 500 * time.Millisecond
	}
	return c.Backoff
}

func (c Config) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// Dial returns the driver for c's URL. It does not contact the BMC: the
// first call does.
func Dial(c Config) (Driver, error) {
	e, err := ParseURL(c.URL)
	if err != nil {
		return nil, err
	}
	if e.Kind == "ipmi" {
		return newIPMI(e, c)
	}
	return newRedfish(e, c)
}

// final marks an error retry must not try again after: a command that
// may have reached the BMC and is not safe to repeat.
type final struct{ error }

func (f final) Unwrap() error { return f.error }

// noAnswer marks err as the BMC not answering: retry tries again.
func noAnswer(err error) error { return fmt.Errorf("%w: %w", ErrNoAnswer, err) }

// retry runs f up to attempts times while it fails with ErrNoAnswer,
// sleeping backoff, doubled each time, between tries. Every try gets its
// own deadline of timeout, inside ctx's.
func retry(ctx context.Context, c Config, bmc, op string, f func(ctx context.Context) error) error {
	wait := c.backoff()
	start := time.Now()
	var err error
	try := 1
	for ; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, c.timeout())
		err = f(tctx)
		cancel()
		if err == nil {
			return nil
		}
		var fe final
		if errors.As(err, &fe) {
			err = fe.error
			break
		}
		if !errors.Is(err, ErrNoAnswer) || try >= c.attempts() || ctx.Err() != nil {
			break
		}
		c.log().Warn("bmc did not answer, trying again", "bmc", bmc, "op", op, "try", try, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		if ctx.Err() != nil {
			break
		}
		wait *= 2
	}
	if errors.Is(err, ErrNoAnswer) && try > 1 {
		err = fmt.Errorf("%w (%d tries in %s)", err, try, time.Since(start).Round(time.Millisecond))
	}
	return &BMCError{BMC: bmc, Op: op, Err: err}
}
