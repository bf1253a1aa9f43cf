//go:build integration

package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver, for the test's own session

	"github.com/rackboot/rackboot/internal/pgtest"
	"github.com/rackboot/rackboot/lab"
	"github.com/rackboot/rackboot/store/sqlstore"
)

// TestTwoServersFaults runs two rackboot servers on one PostgreSQL
// database, both authoritative for the segment of the kill test, under
// the same real clients (24 busybox udhcpc holding 20 s leases and
// renewing them, 4 taking a lease with a new MAC each time), and breaks
// them three ways:
//
//  1. kill -9 of either server at random moments, each started again on
//     its config; every tenth also killed within 150 ms of starting;
//  2. every database session of the servers ended by PostgreSQL
//     (pg_terminate_backend) at random moments, as soon as one of them
//     is inside a transaction;
//  3. one server killed for good: the other renews its clients' leases
//     when they rebind at T2, with the same addresses.
//
// After every fault the database must hold every lease a client was
// ACKed and that has not expired, bound to that client's MAC, no address
// ACKed to two MACs, no MAC with two live leases, no NAK; and the pair
// must go on serving: a probe that reboots with its last lease and takes
// a new one is answered. After a session kill both servers must answer
// again, and neither may exit. RACKBOOT_SOAK=1 runs ten times the faults.
func TestTwoServersFaults(t *testing.T) {
	lab.RequireRoot(t)
	lab.Require(t, "ip", "busybox", "date")
	kills, ends := 30, 30
	if os.Getenv("RACKBOOT_SOAK") != "" {
		kills, ends = 300, 300
	}
	base, stop, err := pgtest.Server(filepath.Join("..", "..", "scripts", "postgres.sh"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	dsn := pgtest.Database(t, base)
	if strings.Contains(dsn, "@127.0.0.1") || strings.Contains(dsn, "@localhost") {
		t.Fatalf("RACKBOOT_TEST_POSTGRES=%s is on this host's loopback, which the servers' namespaces cannot reach: use the unix-socket DSN that scripts/postgres.sh prints", base)
	}
	p := newPairRig(t, buildRackboot(t), dsn)
	began := time.Now()
	for _, s := range p.servers {
		p.waitServing(s, p.launch(s))
	}
	p.startClients(24, 4)
	defer p.stopClients()
	for deadline := time.Now().Add(time.Minute); p.events(steadyMACs)["bound"] < 24 || p.events(churnMACs)["bound"] == 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the clients did not bind in a minute: steady %v, churn %v", p.events(steadyMACs), p.events(churnMACs))
		}
		time.Sleep(200 * time.Millisecond)
	}

	p.kills(kills)
	p.endSessions(ends)
	p.killForGood()

	p.stopClients()
	steady, churn := p.events(steadyMACs), p.events(churnMACs)
	if n := steady["nak"] + churn["nak"] + p.naks; n > 0 {
		if step := clockStep(began); step > killSlack {
			t.Logf("clients were NAKed %d times after the wall clock stepped %.1f s", n, step.Seconds())
		} else {
			t.Errorf("clients were NAKed %d times: a lease they held was gone or another's", n)
		}
	}
	t.Logf("%.0f s in all; script events of the steady clients %v, of the churn %v; probe leases %d",
		time.Since(began).Seconds(), steady, churn, len(p.probedCopy()))
	if t.Failed() {
		for _, s := range p.servers {
			t.Logf("server %s log %s (tail):\n%s", s.name, s.log.Name(), lab.Tail(s.logText(), 3000))
		}
	}
}

// pairRig is the kill test's segment and clients with two servers on it,
// each in a namespace of its own, on one PostgreSQL database.
type pairRig struct {
	*killRig
	dsn     string
	db      *sql.DB // the test's own session: not named rackboot
	servers [2]*pairServer
}

type pairServer struct {
	name string
	ns   string
	ip   netip.Addr
	data string
	log  *os.File
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func newPairRig(t *testing.T, bin, dsn string) *pairRig {
	p := &pairRig{killRig: newKillRig(t, bin), dsn: dsn}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	p.db = db
	p.readDB = func() (map[netip.Addr]dbLease, error) { return scanLeases(db, "the PostgreSQL database") }
	for i := range p.servers {
		s := &pairServer{name: fmt.Sprintf("s%d", i), ip: netip.AddrFrom4([4]byte{10, 61, 0, byte(2 + i)}),
			data: filepath.Join(p.dir, fmt.Sprintf("data%d", i))}
		if s.ns, err = p.n.AddHost(s.name, s.ip.String()+"/16"); err != nil {
			t.Fatal(err)
		}
		if s.log, err = os.Create(filepath.Join(p.dir, s.name+".log")); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.log.Close() })
		p.servers[i] = s
	}
	// Before the namespaces go (cleanups run last first).
	t.Cleanup(func() {
		for _, s := range p.servers {
			if s.alive() {
				s.cmd.Process.Kill()
				<-s.done
			}
		}
	})
	return p
}

func (s *pairServer) alive() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *pairServer) logText() string {
	b, _ := os.ReadFile(s.log.Name())
	return string(b)
}

// launch starts server s and returns the length of its log before, from
// where waitServing looks.
func (p *pairRig) launch(s *pairServer) int64 {
	p.t.Helper()
	fi, err := s.log.Stat()
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(s.log, "--- start at %s\n", time.Now().Format(time.StampMilli))
	// Debug: each reply is a line, which tells that a server answers.
	s.cmd = exec.Command("ip", "netns", "exec", s.ns, p.bin, "serve", "--config", p.cfg, "--data-dir", s.data,
		"--interface", "eth0", "--dhcp-mode", "authoritative", "--dhcp-range", killRange, "--http-addr", ":8080",
		"--db", p.dsn, "--log-level", "debug")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	done, cmd := make(chan struct{}), s.cmd
	s.done = done
	go func() { cmd.Wait(); close(done) }()
	return fi.Size()
}

// waitServing waits for the line s logs once every socket is open, after
// from, and returns how long it took since now.
func (p *pairRig) waitServing(s *pairServer, from int64) time.Duration {
	p.t.Helper()
	begin := time.Now()
	if _, err := p.waitLog(s, from, "rackboot serving", begin.Add(time.Minute)); err != nil {
		p.t.Fatalf("%s: %v; log:\n%s", s.name, err, lab.Tail(s.logText(), 3000))
	}
	return time.Since(begin)
}

// waitLog waits until s logs a line holding text after offset from.
func (p *pairRig) waitLog(s *pairServer, from int64, text string, deadline time.Time) (string, error) {
	for {
		if !s.alive() {
			return "", fmt.Errorf("rackboot exited (%v)", s.cmd.ProcessState)
		}
		if line, ok := logLine(s.log.Name(), from, text); ok {
			return line, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no %q in the log", text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLine is the first line of file after offset from that holds text.
func logLine(file string, from int64, text string) (string, bool) {
	f, err := os.Open(file)
	if err != nil {
		return "", false
	}
	defer f.Close()
	if _, err := f.Seek(from, 0); err != nil {
		return "", false
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), text) {
			return sc.Text(), true
		}
	}
	return "", false
}

// logSize is how long s's log is now.
func (s *pairServer) logSize() int64 {
	fi, err := s.log.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// warnings are the lines at WARN or ERROR that s logged after from.
func (s *pairServer) warnings(from int64) []string {
	b, _ := os.ReadFile(s.log.Name())
	if from > int64(len(b)) {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b[from:]), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			out = append(out, l)
		}
	}
	return out
}

func (p *pairRig) kill(s *pairServer) {
	p.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill %s: %v", s.name, err)
	}
	<-s.done
	ws, _ := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		p.t.Fatalf("%s ended before it was killed (%v); log:\n%s", s.name, s.cmd.ProcessState, lab.Tail(s.logText(), 3000))
	}
}

// checkNow holds the database to the clients' ACKs (see killRig.check)
// and stops the test after three failed checks.
func (p *pairRig) checkNow(what string, failures *int) int {
	p.t.Helper()
	n, problems, _ := p.check()
	if len(problems) > 0 {
		*failures++
		for _, pr := range problems {
			p.t.Errorf("after %s: %s", what, pr)
		}
		if *failures >= 3 {
			p.t.Fatalf("stopping after %d failed checks", *failures)
		}
	}
	return n
}

// serve asks the pair for the probe's last lease and a new one (see
// killRig.served), within a minute, and returns how long that took.
func (p *pairRig) serve(what string) time.Duration {
	p.t.Helper()
	begin := time.Now()
	if _, _, err := p.served(begin, begin.Add(time.Minute)); err != nil {
		p.t.Fatalf("after %s: the pair does not serve: %v", what, err)
	}
	return time.Since(begin)
}

// kills kills a server at random n times, checks the database with it
// down, and starts it again.
func (p *pairRig) kills(n int) {
	p.t.Helper()
	began := time.Now()
	var restarts, serves []time.Duration
	checked, failures, early := 0, 0, 0
	for cycle := 0; cycle < n; cycle++ {
		s := p.servers[mrand.IntN(len(p.servers))]
		p.kill(s)
		what := fmt.Sprintf("kill %d (%s)", cycle+1, s.name)
		checked += p.checkNow(what, &failures)
		// The other serves alone meanwhile.
		serves = append(serves, p.serve(what))
		if cycle%10 == 9 {
			p.launch(s)
			time.Sleep(mrand.N(150 * time.Millisecond))
			p.kill(s)
			early++
		}
		restarts = append(restarts, p.waitServing(s, p.launch(s)))
		time.Sleep(20*time.Millisecond + mrand.N(980*time.Millisecond))
	}
	p.t.Logf("kill -9: %d kills of either server in %.0f s and %d more while starting; %d ACKed leases checked, %d checks failed",
		n, time.Since(began).Seconds(), early, checked, failures)
	p.t.Logf("kill -9: from start to serving: %s", spread(restarts))
	p.t.Logf("kill -9: with one server down, a rebooting and a new client served in %s", spread(serves))
}

// endSessions has PostgreSQL end every session of both servers, n times
// at random moments, each time as soon as one of them is in a
// transaction (or after half a second without one). Both servers must
// answer again afterwards, the database must hold every ACK, and
// neither server may exit.
func (p *pairRig) endSessions(n int) {
	p.t.Helper()
	ctx := context.Background()
	began := time.Now()
	from := [2]int64{p.servers[0].logSize(), p.servers[1].logSize()}
	var again []time.Duration
	checked, failures, ended, inTx := 0, 0, 0, 0
	for i := 0; i < n; i++ {
		time.Sleep(50*time.Millisecond + mrand.N(450*time.Millisecond))
		offsets := [2]int64{p.servers[0].logSize(), p.servers[1].logSize()}
		e, tx, err := p.terminate(ctx)
		if err != nil {
			p.t.Fatal(err)
		}
		at := time.Now()
		ended, inTx = ended+e, inTx+tx
		what := fmt.Sprintf("session kill %d (%d sessions, %d in a transaction)", i+1, e, tx)
		p.serve(what)
		// Both servers answer again: each logs a reply, which took the
		// database, after the sessions ended.
		for j, s := range p.servers {
			if _, err := p.waitLog(s, offsets[j], "dhcp reply", at.Add(30*time.Second)); err != nil {
				p.t.Fatalf("after %s: %s: %v; log:\n%s", what, s.name, err, lab.Tail(s.logText(), 3000))
			}
			again = append(again, time.Since(at))
		}
		checked += p.checkNow(what, &failures)
	}
	warns := 0
	for j, s := range p.servers {
		w := s.warnings(from[j])
		warns += len(w)
		for _, l := range w {
			p.t.Logf("session kills: %s: %s", s.name, l)
		}
	}
	p.t.Logf("session kills: %d rounds in %.0f s, %d sessions ended, %d of them in a transaction; %d ACKed leases checked, %d checks failed; %d warnings logged",
		n, time.Since(began).Seconds(), ended, inTx, checked, failures, warns)
	p.t.Logf("session kills: from the kill to a reply from each server (the slower of the two each round bounds it): %s", spread(again))
}

// terminate waits up to half a second for a session of rackboot's on
// the test database to be inside a transaction, then ends them all. It
// returns how many it ended and how many were in a transaction.
func (p *pairRig) terminate(ctx context.Context) (ended, inTx int, err error) {
	const where = `FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()`
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		var busy int
		if err := p.db.QueryRowContext(ctx, `SELECT count(*) `+where+` AND xact_start IS NOT NULL`, sqlstore.ApplicationName).Scan(&busy); err != nil {
			return 0, 0, fmt.Errorf("look for rackboot's sessions: %w", err)
		}
		if busy > 0 {
			break
		}
	}
	rows, err := p.db.QueryContext(ctx, `SELECT xact_start IS NOT NULL, pg_terminate_backend(pid) `+where, sqlstore.ApplicationName)
	if err != nil {
		return 0, 0, fmt.Errorf("end rackboot's sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tx, ok bool
		if err := rows.Scan(&tx, &ok); err != nil {
			return 0, 0, err
		}
		if ok {
			ended++
			if tx {
				inTx++
			}
		}
	}
	if ended == 0 && rows.Err() == nil {
		return 0, 0, fmt.Errorf("no session of %q on the database to end", sqlstore.ApplicationName)
	}
	return ended, inTx, rows.Err()
}

// killForGood kills the server more steady clients hold their lease
// from and never starts it again. Each of those clients renews with it
// at T1 and gets no answer, rebinds by broadcast at T2, and must be
// ACKed the same address by the survivor; the database must hold every
// ACK throughout, and new clients must be served.
func (p *pairRig) killForGood() {
	p.t.Helper()
	acks, err := p.lastACKs()
	if err != nil {
		p.t.Fatal(err)
	}
	held := map[string]int{}
	for mac, a := range acks {
		if strings.HasPrefix(mac, steadyMACs) {
			held[a.server]++
		}
	}
	dead, survivor := p.servers[0], p.servers[1]
	if held[survivor.ip.String()] > held[dead.ip.String()] {
		dead, survivor = survivor, dead
	}
	orphans := map[string]acked{}
	for mac, a := range acks {
		if strings.HasPrefix(mac, steadyMACs) && a.server == dead.ip.String() {
			orphans[mac] = a
		}
	}
	if len(orphans) == 0 {
		p.t.Fatalf("no steady client holds a lease of either server: %v", held)
	}
	p.kill(dead)
	at := wallNow()
	failures, checked := 0, 0
	renewed := map[string]time.Duration{}
	deadline := time.Now().Add(killLeaseTime + 10*time.Second)
	for len(renewed) < len(orphans) && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		acks, err := p.lastACKs()
		if err != nil {
			p.t.Fatal(err)
		}
		for mac, old := range orphans {
			a := acks[mac]
			if _, ok := renewed[mac]; ok || !a.at.After(at) {
				continue
			}
			if a.server != survivor.ip.String() || a.ip != old.ip {
				p.t.Errorf("%s held %s from %s, which died; then ACKed %s by %s", mac, old.ip, dead.name, a.ip, a.server)
			}
			renewed[mac] = a.at.Sub(at)
		}
		checked += p.checkNow("the kill for good", &failures)
	}
	for mac, old := range orphans {
		if _, ok := renewed[mac]; !ok {
			p.t.Errorf("%s held %s from %s, which died %.0f s ago; the survivor has not renewed it", mac, old.ip, dead.name, time.Since(at).Seconds())
		}
	}
	serve := p.serve("the kill for good")
	ds := slices.Collect(maps.Values(renewed))
	p.t.Logf("kill for good: %s held %d of the 24 steady clients' leases; the survivor renewed %d of them, with the same address, in %s after the kill (lease %s, T2 %s); %d ACKed leases checked, %d checks failed; the survivor served a rebooting and a new client in %.0f ms",
		dead.name, len(orphans), len(renewed), spread(ds), killLeaseTime, killLeaseTime*7/8, checked, failures, ms(serve))
}
