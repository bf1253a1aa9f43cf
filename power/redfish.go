package power

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/common"
)

// ErrCertificate: the BMC's TLS certificate is not the one pinned, or no
// CA vouches for it. Never retried.
var ErrCertificate = errors.New("the BMC's certificate is not trusted")

// redfishDriver is a BMC's Redfish service (DMTF DSP0266), through
// gofish for the transport, authentication, the service root and
// errors. Every call opens a client of its own with HTTP basic
// authentication: no session is left behind on the BMC.
type redfishDriver struct {
	e      Endpoint
	c      Config
	name   string
	base   string
	client *http.Client
}

// ParseFingerprint checks a certificate pin and turns "AB:CD:..." or
// "abcd..." into lower-case hex.
func ParseFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.NewReplacer(":", "", " ", "").Replace(s))
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("certificate fingerprint %q: want the SHA-256 of the certificate, 64 hex digits", s)
	}
	return h, nil
}

// Fingerprint is the pin of a certificate: the hex SHA-256 of its DER.
func Fingerprint(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(h[:])
}

func newRedfish(e Endpoint, c Config) (*redfishDriver, error) {
	d := &redfishDriver{e: e, c: c, name: e.String()}
	scheme := "http"
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.HTTPS {
		scheme = "https"
		switch {
		case c.Fingerprint != "":
			pin, err := ParseFingerprint(c.Fingerprint)
			if err != nil {
				return nil, &BMCError{BMC: d.name, Op: "connect", Err: err}
			}
			// The pin replaces the CA check (BMCs' certificates are
			// mostly self-signed), and is checked on every handshake.
			tc.InsecureSkipVerify = true
			tc.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return fmt.Errorf("%w: it sent none", ErrCertificate)
				}
				if got := Fingerprint(cs.PeerCertificates[0]); got != pin {
					return fmt.Errorf("%w: its SHA-256 is %s, the pinned one %s", ErrCertificate, got, pin)
				}
				return nil
			}
		case c.CAFile != "":
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, &BMCError{BMC: d.name, Op: "connect", Err: fmt.Errorf("bmc CA file: %w", err)}
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, &BMCError{BMC: d.name, Op: "connect", Err: fmt.Errorf("bmc CA file %s: no PEM certificate in it", c.CAFile)}
			}
			tc.RootCAs = pool
		}
	}
	d.base = scheme + "://" + net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
	d.client = &http.Client{
		// No proxy: a BMC network is not reached through one.
		Transport: &http.Transport{TLSClientConfig: tc, TLSHandshakeTimeout: c.timeout(), DisableKeepAlives: true,
			DialContext: (&net.Dialer{Timeout: c.timeout()}).DialContext},
		// A BMC never redirects a Redfish call elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d, nil
}

// classifyRedfish turns gofish's and net/http's errors into the package's.
func classifyRedfish(err error) error {
	var ce *common.Error
	var ne net.Error
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	var cerr x509.CertificateInvalidError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrCertificate):
		return final{err}
	case errors.As(err, &uerr), errors.As(err, &herr), errors.As(err, &cerr):
		return final{fmt.Errorf("%w: %w (pin its SHA-256 with --bmc-fingerprint, or give the CA)", ErrCertificate, err)}
	case errors.As(err, &ce) && (ce.HTTPReturnedStatusCode == http.StatusUnauthorized || ce.HTTPReturnedStatusCode == http.StatusForbidden):
		return fmt.Errorf("%w: HTTP %d: %s", ErrAuth, ce.HTTPReturnedStatusCode, redfishMessage(ce))
	case errors.As(err, &ce) && ce.HTTPReturnedStatusCode == http.StatusServiceUnavailable:
		return noAnswer(fmt.Errorf("HTTP 503: %s", redfishMessage(ce)))
	case errors.As(err, &ce) && ce.HTTPReturnedStatusCode != 0:
		return fmt.Errorf("HTTP %d: %s", ce.HTTPReturnedStatusCode, redfishMessage(ce))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.As(err, &ne) && ne.Timeout():
		return noAnswer(err)
	}
	return err
}

// redfishMessage is the most telling line of a Redfish error body.
func redfishMessage(ce *common.Error) string {
	for _, x := range ce.ExtendedInfos {
		if x.Message != "" {
			return x.Message
		}
	}
	for _, x := range ce.ExtendedInfos {
		if x.MessageID != "" {
			return x.MessageID
		}
	}
	if ce.Message != "" && !strings.HasPrefix(strings.TrimSpace(ce.Message), "<") {
		return strings.TrimSpace(ce.Message)
	}
	return http.StatusText(ce.HTTPReturnedStatusCode)
}

// system is what the driver reads of a ComputerSystem.
type system struct {
	ODataID    string `json:"@odata.id"`
	PowerState string
	Actions    struct {
		Reset struct {
			Target  string   `json:"target"`
			Allowed []string `json:"ResetType@Redfish.AllowableValues"`
		} `json:"#ComputerSystem.Reset"`
	}
	etag string
}

func (s *system) allows(t string) bool {
	return len(s.Actions.Reset.Allowed) == 0 || slices.Contains(s.Actions.Reset.Allowed, t)
}

// call runs f with a connected client and the node's system, in a try
// of its own.
func (d *redfishDriver) call(ctx context.Context, op string, safe bool, f func(context.Context, *gofish.APIClient, *system) error) error {
	return retry(ctx, d.c, d.name, op, func(ctx context.Context) error {
		cl, err := gofish.ConnectContext(ctx, gofish.ClientConfig{Endpoint: d.base, Username: d.c.User, Password: d.c.Password,
			BasicAuth: true, HTTPClient: d.client})
		if err != nil {
			return fmt.Errorf("service root: %w", classifyRedfish(err))
		}
		sys, err := d.system(cl)
		if err != nil {
			return classifyRedfish(err)
		}
		err = classifyRedfish(f(ctx, cl, sys))
		if err != nil && !safe && errors.Is(err, ErrNoAnswer) {
			return final{fmt.Errorf("%w; not tried again, since the BMC may have done it: check the power state", err)}
		}
		return err
	})
}

func (d *redfishDriver) system(cl *gofish.APIClient) (*system, error) {
	uri := d.e.System
	if uri == "" {
		// DSP0266 fixes the collection's path. gofish's Service.Systems
		// would hide a 401 in a collection error.
		resp, err := cl.Get("/redfish/v1/Systems")
		if err != nil {
			return nil, fmt.Errorf("list systems: %w", err)
		}
		var coll struct {
			Members []struct {
				ID string `json:"@odata.id"`
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&coll)
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("list systems: %w", err)
		}
		if len(coll.Members) != 1 {
			var ids []string
			for _, m := range coll.Members {
				ids = append(ids, m.ID)
			}
			return nil, fmt.Errorf("the service has %d systems (%s): name one in the URL, redfish://%s/redfish/v1/Systems/ID",
				len(coll.Members), strings.Join(ids, ", "), d.e.Host)
		}
		uri = coll.Members[0].ID
	}
	resp, err := cl.Get(uri)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", uri, err)
	}
	defer resp.Body.Close()
	var s system
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("get %s: %w", uri, err)
	}
	if s.ODataID == "" {
		s.ODataID = uri
	}
	s.etag = resp.Header.Get("ETag")
	return &s, nil
}

func redfishState(s string) (State, error) {
	switch s {
	case "On", "PoweringOff":
		return StateOn, nil
	case "Off", "PoweringOn":
		return StateOff, nil
	}
	return "", fmt.Errorf("power state %q", s)
}

func (d *redfishDriver) State(ctx context.Context) (State, error) {
	var st State
	err := d.call(ctx, "power state", true, func(_ context.Context, _ *gofish.APIClient, s *system) error {
		var err error
		st, err = redfishState(s.PowerState)
		return err
	})
	return st, err
}

// reset posts a ComputerSystem.Reset. A 202 with a task monitor is
// followed until the task ends or ctx does.
func (d *redfishDriver) reset(ctx context.Context, cl *gofish.APIClient, s *system, t string) error {
	if !s.allows(t) {
		return fmt.Errorf("reset type %s: the BMC allows only %s", t, strings.Join(s.Actions.Reset.Allowed, ", "))
	}
	target := s.Actions.Reset.Target
	if target == "" {
		target = strings.TrimSuffix(s.ODataID, "/") + "/Actions/ComputerSystem.Reset"
	}
	resp, err := cl.Post(target, map[string]string{"ResetType": t})
	if err != nil {
		return fmt.Errorf("reset %s: %w", t, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted {
		if loc := resp.Header.Get("Location"); loc != "" {
			return d.waitTask(ctx, cl, loc)
		}
	}
	return nil
}

// waitTask polls a task monitor (DSP0266 §13.2): 202 while it runs, then
// the task's end.
func (d *redfishDriver) waitTask(ctx context.Context, cl *gofish.APIClient, loc string) error {
	if u, err := parseLocation(loc); err == nil {
		loc = u
	}
	for {
		resp, err := cl.Get(loc)
		if err != nil {
			var ce *common.Error
			if errors.As(err, &ce) && ce.HTTPReturnedStatusCode == http.StatusNotFound {
				return nil // gone: done, and forgotten
			}
			return fmt.Errorf("task %s: %w", loc, err)
		}
		var task struct {
			TaskState  string
			TaskStatus string
			Messages   []struct{ Message string }
		}
		json.NewDecoder(resp.Body).Decode(&task)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			switch task.TaskState {
			case "Exception", "Killed", "Cancelled", "Interrupted":
				msg := task.TaskState
				for _, m := range task.Messages {
					msg += ": " + m.Message
				}
				return fmt.Errorf("task %s: %s", loc, msg)
			}
			return nil
		}
		t := time.NewTimer(250 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("task %s still running: %w", loc, ctx.Err())
		case <-t.C:
		}
	}
}

// parseLocation reduces an absolute task monitor URL to its path.
func parseLocation(loc string) (string, error) {
	if strings.HasPrefix(loc, "/") {
		return loc, nil
	}
	i := strings.Index(loc, "://")
	if i < 0 {
		return "", errors.New("not a URL")
	}
	j := strings.Index(loc[i+3:], "/")
	if j < 0 {
		return "/", nil
	}
	return loc[i+3+j:], nil
}

func (d *redfishDriver) On(ctx context.Context) error {
	return d.call(ctx, "power on", true, func(ctx context.Context, cl *gofish.APIClient, s *system) error {
		if st, _ := redfishState(s.PowerState); st == StateOn {
			return nil
		}
		return d.reset(ctx, cl, s, "On")
	})
}

func (d *redfishDriver) Off(ctx context.Context) error {
	return d.call(ctx, "power off", true, func(ctx context.Context, cl *gofish.APIClient, s *system) error {
		if s.PowerState == "Off" {
			return nil
		}
		return d.reset(ctx, cl, s, "ForceOff")
	})
}

func (d *redfishDriver) SoftOff(ctx context.Context) error {
	return d.call(ctx, "soft off", true, func(ctx context.Context, cl *gofish.APIClient, s *system) error {
		if s.PowerState == "Off" {
			return nil
		}
		return d.reset(ctx, cl, s, "GracefulShutdown")
	})
}

// Cycle powers an off node on; one that is on gets PowerCycle, or
// ForceRestart where the BMC does not offer it (iDRAC, iLO).
func (d *redfishDriver) Cycle(ctx context.Context) error {
	return d.call(ctx, "power cycle", false, func(ctx context.Context, cl *gofish.APIClient, s *system) error {
		if s.PowerState == "Off" {
			return d.reset(ctx, cl, s, "On")
		}
		if s.allows("PowerCycle") && len(s.Actions.Reset.Allowed) > 0 {
			return d.reset(ctx, cl, s, "PowerCycle")
		}
		return d.reset(ctx, cl, s, "ForceRestart")
	})
}

func (d *redfishDriver) Reset(ctx context.Context) error {
	return d.call(ctx, "reset", false, func(ctx context.Context, cl *gofish.APIClient, s *system) error {
		if s.PowerState == "Off" {
			return d.reset(ctx, cl, s, "On")
		}
		return d.reset(ctx, cl, s, "ForceRestart")
	})
}

func (d *redfishDriver) SetBootDevice(ctx context.Context, b Boot) error {
	target := "Pxe"
	switch b.Device {
	case DevicePXE:
	case DeviceDisk:
		target = "Hdd"
	default:
		_, err := ParseDevice(string(b.Device))
		return &BMCError{BMC: d.name, Op: "set boot device", Err: err}
	}
	boot := map[string]string{"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "Legacy"}
	if b.Persistent {
		boot["BootSourceOverrideEnabled"] = "Continuous"
	}
	if b.UEFI {
		boot["BootSourceOverrideMode"] = "UEFI"
	}
	return d.call(ctx, "set boot device", true, func(_ context.Context, cl *gofish.APIClient, s *system) error {
		hdr := map[string]string{}
		if s.etag != "" {
			hdr["If-Match"] = s.etag
		}
		resp, err := cl.PatchWithHeaders(s.ODataID, map[string]any{"Boot": boot}, hdr)
		if err != nil {
			return fmt.Errorf("patch %s Boot: %w", s.ODataID, err)
		}
		resp.Body.Close()
		return nil
	})
}

// Close implements Driver: nothing is held between calls.
func (d *redfishDriver) Close() error { return nil }
