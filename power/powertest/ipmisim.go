// Package powertest runs BMCs for tests: OpenIPMI's ipmi_sim, a real
// IPMI v2.0 lanplus implementation (Debian package openipmi), on
// 127.0.0.1 with a port of its own, and UDP ports that never answer.
// ipmitool (package ipmitool) reads the simulated BMC back independently
// of rackboot's driver.
package powertest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Sim is a running ipmi_sim.
type Sim struct {
	Host     string
	Port     int
	User     string
	Password string
	// Dir holds lan.conf, sim.emu, the state dir and the simulator's log.
	Dir string
	cmd *exec.Cmd
	log *bytes.Buffer
}

// URL is the simulator as a rackboot BMC URL.
func (s *Sim) URL() string { return "ipmi://" + net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Log is what the simulator wrote so far.
func (s *Sim) Log() string { return s.log.String() }

// lanConf is an ipmi_sim configuration: one LAN channel on ADDR PORT, an
// administrator USER with PASS, and a chassis whose power and boot device
// are kept by the chassis_control program (chassisScript): without one,
// or a VM connected to a "serial 15 ... codec VM" line, ipmi_sim answers
// chassis control and every boot option with 0xcc (invalid data field).
const lanConf = `name "rackboot-test"
set_working_mc 0x20
  startlan 1
    addr %s %d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s 0x20"
  user 2 true "%s" "%s" admin 10 md5
`

// chassisScript is the chassis_control program. ipmi_sim runs it through
// popen as "PROG MC get NAME..." (it prints NAME:VALUE lines) and "PROG
// MC set NAME VALUE..."; names are power (0 or 1), reset, shutdown and
// boot (none, pxe, default (the disk), cdrom, bios). It keeps each value
// in a file of its directory and logs every call to calls.
const chassisScript = `#!/bin/sh
d=%q
echo "$*" >> "$d/calls"
while [ $# -gt 0 ] && [ "$1" != get ] && [ "$1" != set ]; do shift; done
op=$1; shift
case $op in
get) for n in "$@"; do
	v=$(cat "$d/$n" 2>/dev/null)
	[ -n "$v" ] || { [ "$n" = boot ] && v=none || v=0; }
	echo "$n:$v"
done ;;
set) while [ $# -ge 2 ]; do echo "$2" > "$d/$1"; shift 2; done ;;
esac
`

const simEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
`

// FreeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func FreeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// SilentUDP returns the address of a UDP socket that reads nothing and
// answers nothing: a BMC that is down but whose host drops packets.
func SilentUDP(t testing.TB) string {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.LocalAddr().String()
}

// StartSim starts ipmi_sim with an administrator user and password, and
// waits until ipmitool gets an answer from it. It fails the test when
// ipmi_sim or ipmitool are missing (never skips), and stops the
// simulator when the test ends.
func StartSim(t testing.TB, user, password string) *Sim {
	t.Helper()
	for _, prog := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s is missing: apt-get install -y openipmi ipmitool, or run scripts/install-test-deps.sh", prog)
		}
	}
	dir := t.TempDir()
	var last error
	for try := 0; try < 3; try++ {
		s := &Sim{Host: "127.0.0.1", Port: FreeUDPPort(t), User: user, Password: password, Dir: dir, log: &bytes.Buffer{}}
		if err := s.start(t); err != nil {
			last = err
			continue
		}
		return s
	}
	t.Fatalf("ipmi_sim did not start: %v", last)
	return nil
}

func (s *Sim) start(t testing.TB) error {
	conf := filepath.Join(s.Dir, "lan.conf")
	emu := filepath.Join(s.Dir, "sim.emu")
	state := filepath.Join(s.Dir, "state")
	chassis := filepath.Join(s.Dir, "chassis")
	if err := os.MkdirAll(chassis, 0o700); err != nil {
		return err
	}
	script := filepath.Join(chassis, "control.sh")
	if err := os.WriteFile(script, fmt.Appendf(nil, chassisScript, chassis), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(conf, fmt.Appendf(nil, lanConf, s.Host, s.Port, script, s.User, s.Password), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(emu, []byte(simEmu), 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	// -n: no daemon, no console.
	s.cmd = exec.Command("ipmi_sim", "-c", conf, "-f", emu, "-s", state, "-n")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// A group of its own: the "host" a power-on starts goes with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("ipmi_sim exited: %v\n%s", err, s.log)
		default:
		}
		if _, err := s.IPMITool("chassis", "power", "status"); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("ipmi_sim on port %d never answered ipmitool\n%s", s.Port, s.log)
}

// Calls is the chassis_control program's log: one line per call, e.g.
// "0x20 set power 1", "0x20 set boot pxe".
func (s *Sim) Calls() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "chassis", "calls"))
	return string(b)
}

// IPMITool runs ipmitool against the simulator over lanplus with cipher
// suite 3 and returns its output.
func (s *Sim) IPMITool(args ...string) (string, error) {
	full := append([]string{"-I", "lanplus", "-C", "3", "-N", "1", "-R", "1", "-H", s.Host, "-p", strconv.Itoa(s.Port),
		"-U", s.User, "-P", s.Password}, args...)
	out, err := exec.Command("ipmitool", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
