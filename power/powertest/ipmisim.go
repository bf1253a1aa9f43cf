// Package powertest runs BMCs for tests: OpenIPMI's ipmi_sim, a real
// IPMI v2.0 lanplus implementation (Debian package openipmi), on
// 127.0.0.1 with a port of its own (configured as lab.SimConfig, which
// also reports the BMC's own LAN address and MAC), and UDP ports that
// never answer.
// ipmitool (package ipmitool) reads the simulated BMC back independently
// of rackboot's driver.
package powertest

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rackboot/rackboot/lab"
)

// Sim is a running ipmi_sim.
type Sim struct {
	Host     string
	Port     int
	User     string
	Password string
	// MAC is the LAN MAC address the BMC reports (Get LAN
	// Configuration Parameters, as its Host is its IP address).
	MAC net.HardwareAddr
	// Dir holds lan.conf, sim.emu, the state dir and the simulator's log.
	Dir string
	cmd *exec.Cmd
	log *bytes.Buffer
}

// URL is the simulator as a rackboot BMC URL.
func (s *Sim) URL() string { return "ipmi://" + net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Log is what the simulator wrote so far.
func (s *Sim) Log() string { return s.log.String() }

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
		s := &Sim{Host: "127.0.0.1", Port: FreeUDPPort(t), User: user, Password: password, Dir: dir, log: &bytes.Buffer{},
			MAC: net.HardwareAddr{0x02, 0x00, 0x1b, 0x3c, 0x00, 0x01}}
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
	lan := filepath.Join(s.Dir, "lan.sh")
	if err := os.WriteFile(lan, []byte(lab.LANProgram(netip.MustParseAddr(s.Host), "255.0.0.0", s.MAC)), 0o700); err != nil {
		return err
	}
	cfg := lab.SimConfig{Addr: s.Host, Port: s.Port, User: s.User, Password: s.Password, Chassis: script, LAN: lan}
	if err := os.WriteFile(conf, []byte(cfg.Conf()), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(emu, []byte(lab.SimEmu), 0o600); err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return err
	}
	var err error
	if s.cmd, err = lab.StartSim("", conf, emu, state, s.log); err != nil {
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
