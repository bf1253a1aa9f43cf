package appliance

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/dhcp"
	"github.com/rackboot/rackboot/internal/httpserve"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/tftp"
)

// PasswordFile holds the first admin user's password, written once.
const PasswordFile = "admin.password"

// ensureAdminUser gives a fresh install a web UI user "admin" with a
// random password in the data dir, so the UI can be reached at all.
func ensureAdminUser(ctx context.Context, st store.Store, dataDir string, log *slog.Logger) error {
	users, err := st.Users(ctx)
	if err != nil {
		return fmt.Errorf("admin user: %w", err)
	}
	if len(users) > 0 {
		return nil
	}
	path := filepath.Join(dataDir, PasswordFile)
	pw := ""
	if b, err := os.ReadFile(path); err == nil && len(b) >= api.MinPasswordLength {
		pw = string(b[:len(b)-1])
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin user: %w", err)
	}
	if len(pw) < api.MinPasswordLength {
		b := make([]byte, 18)
		rand.Read(b)
		pw = base64.RawURLEncoding.EncodeToString(b)
		if err := os.WriteFile(path, []byte(pw+"\n"), 0o600); err != nil {
			return fmt.Errorf("admin user: %w", err)
		}
	}
	hash, err := api.HashPassword(pw)
	if err != nil {
		return fmt.Errorf("admin user: %w", err)
	}
	// Servers sharing a database may start together: the first to
	// create admin wins, and the others' password files are removed.
	if err := st.CreateUser(ctx, store.User{Name: "admin", Role: store.RoleAdmin, PasswordHash: hash}); errors.Is(err, store.ErrConflict) {
		os.Remove(path)
		log.Info("web UI user admin was created by another server sharing the database")
		return nil
	} else if err != nil {
		return fmt.Errorf("admin user: %w", err)
	}
	log.Info("created web UI user admin", "password_file", path)
	return nil
}

// httpCounter counts boot-time HTTP answers by status class.
type httpCounter struct {
	ok, redirect, clientErr, serverErr atomic.Uint64
}

func (h *httpCounter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// httpserve.Writer keeps the sendfile path of the files beneath.
		rec := &httpserve.Writer{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		switch code := rec.Status(); {
		case code >= 500:
			h.serverErr.Add(1)
		case code >= 400:
			h.clientErr.Add(1)
		case code >= 300:
			h.redirect.Add(1)
		default:
			h.ok.Add(1)
		}
	})
}

// powerCounts gives the power-managed nodes per power state.
type powerCounts interface{ Counts() map[string]int }

func writeMetrics(w io.Writer, dhcps []*dhcp.Server, t *tftp.Server, h *httpCounter, pc powerCounts, traces *boot.Queue) {
	counter := func(name, help string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
	}
	if len(dhcps) > 0 {
		counter("rackboot_dhcp_packets_total", "DHCP packets by server port and outcome.")
		for _, s := range dhcps {
			port := "67"
			if s.ProxyPort {
				port = "4011"
			}
			st := s.Stats()
			for _, kv := range []struct {
				k string
				v uint64
			}{{"received", st.Received}, {"replied", st.Replied}, {"malformed", st.Malformed}, {"ignored", st.Ignored}, {"nak", st.NAKs}, {"relay_refused", st.RelayRefused}, {"throttled", st.Throttled}, {"overloaded", st.Overloaded}, {"superseded", st.Superseded}} {
				fmt.Fprintf(w, "rackboot_dhcp_packets_total{port=%q,outcome=%q} %d\n", port, kv.k, kv.v)
			}
		}
	}
	ts := t.Stats()
	for _, m := range []struct {
		name, help string
		v          uint64
	}{
		{"rackboot_tftp_requests_total", "TFTP read and write requests.", ts.Requests},
		{"rackboot_tftp_transfers_completed_total", "TFTP transfers the client acknowledged to the end.", ts.Completed},
		{"rackboot_tftp_bytes_total", "File bytes TFTP clients acknowledged.", ts.Bytes},
		{"rackboot_tftp_malformed_total", "TFTP packets dropped as unparseable.", ts.Malformed},
		{"rackboot_tftp_errors_total", "TFTP ERROR packets sent.", ts.Errors},
		{"rackboot_tftp_retransmits_total", "TFTP windows and OACKs sent again after a timeout.", ts.Retransmits},
		{"rackboot_tftp_busy_total", "TFTP requests dropped because a transfer cap was reached.", ts.Busy},
	} {
		counter(m.name, m.help)
		fmt.Fprintf(w, "%s %d\n", m.name, m.v)
	}
	counter("rackboot_boot_http_responses_total", "Boot-time HTTP answers by status class.")
	for _, kv := range []struct {
		k string
		v uint64
	}{{"2xx", h.ok.Load()}, {"3xx", h.redirect.Load()}, {"4xx", h.clientErr.Load()}, {"5xx", h.serverErr.Load()}} {
		fmt.Fprintf(w, "rackboot_boot_http_responses_total{class=%q} %d\n", kv.k, kv.v)
	}
	if traces != nil {
		counter("rackboot_boot_events_dropped_total", "Boot events not recorded: the trace queue was full.")
		fmt.Fprintf(w, "rackboot_boot_events_dropped_total %d\n", traces.Dropped())
	}
	if pc != nil {
		// Counts per state, not a series per node: thousands of nodes
		// would be thousands of series. The node list has each node's.
		fmt.Fprintf(w, "# HELP rackboot_power_nodes Power-managed nodes by the power state their BMC last reported (unknown: it did not answer).\n# TYPE rackboot_power_nodes gauge\n")
		c := pc.Counts()
		for _, st := range []string{"on", "off", "unknown"} {
			fmt.Fprintf(w, "rackboot_power_nodes{state=%q} %d\n", st, c[st])
		}
	}
}
