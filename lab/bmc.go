package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/internal/syncbuf"
)

// SimConfig is an OpenIPMI ipmi_sim configuration (Debian package
// openipmi): one LAN channel (lanplus, IPMI v2.0) and a chassis whose
// power and boot device belong to a chassis_control program.
type SimConfig struct {
	// Addr and Port are where the LAN channel listens.
	Addr string
	Port int
	// User and Password are the administrator, user id 2.
	User, Password string
	// Chassis is the chassis_control program: ipmi_sim runs it as "PROG
	// 0x20 get NAME..." (it prints NAME:VALUE lines) and "PROG 0x20 set
	// NAME VALUE...", for power (0 or 1), reset, shutdown and boot
	// (none, pxe, default, cdrom, bios). Without one, ipmi_sim answers
	// every boot option with 0xcc (invalid data field).
	Chassis string
	// LAN is the lan_config_program, which answers Get LAN Configuration
	// Parameters (the BMC's own address, what an in-band reader finds):
	// ipmi_sim runs it as "PROG eth0 get NAME..." for ip_addr, ip_addr_src,
	// mac_addr, subnet_mask and the gateways.
	LAN string
	// Serial, when set, is the HOST:PORT ipmi_sim listens on for a
	// QEMU ipmi-bmc-extern device: the host's in-band interface (KCS).
	Serial string
}

// Conf is the configuration file's text.
func (c SimConfig) Conf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "name \"rackboot-lab\"\nset_working_mc 0x20\n  startlan 1\n    addr %s %d\n    priv_limit admin\n", c.Addr, c.Port)
	for _, p := range []string{"callback", "user", "operator", "admin"} {
		fmt.Fprintf(&b, "    allowed_auths_%s md5\n", p)
	}
	b.WriteString("    guid a123456789abcdefa123456789abcdef\n")
	if c.LAN != "" {
		// ipmi_sim passes the device named after the program first.
		fmt.Fprintf(&b, "    lan_config_program \"%s eth0\"\n", c.LAN)
	}
	b.WriteString("  endlan\n")
	if c.Chassis != "" {
		fmt.Fprintf(&b, "  chassis_control \"%s 0x20\"\n", c.Chassis)
	}
	if c.Serial != "" {
		host, port, _ := net.SplitHostPort(c.Serial)
		fmt.Fprintf(&b, "  serial 15 %s %s codec VM\n", host, port)
	}
	fmt.Fprintf(&b, "  user 2 true %q %q admin 10 md5\n", c.User, c.Password)
	return b.String()
}

// SimEmu is the ipmi_sim emulator script: one BMC at IPMB address 0x20.
const SimEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
`

// LANProgram is a lan_config_program that reports addr, with subnet
// mask mask, and mac as the BMC's own, statically set, and accepts any
// set without changing anything.
func LANProgram(addr netip.Addr, mask string, mac net.HardwareAddr) string {
	return fmt.Sprintf(`#!/bin/sh
shift
op=$1; shift
[ "$op" = get ] || exit 0
for n in "$@"; do
	case $n in
	ip_addr) echo "ip_addr:%s" ;;
	ip_addr_src) echo "ip_addr_src:static" ;;
	mac_addr) echo "mac_addr:%s" ;;
	subnet_mask) echo "subnet_mask:%s" ;;
	*_ip_addr) echo "$n:0.0.0.0" ;;
	*_mac_addr) echo "$n:00:00:00:00:00:00" ;;
	esac
done
`, addr, mac, mask)
}

// StartSim runs ipmi_sim on conf and emu with its state in stateDir, in
// network namespace ns ("" for this one), in a process group of its own
// so that Kill ends everything it started. out receives its log.
func StartSim(ns, conf, emu, stateDir string, out io.Writer) (*exec.Cmd, error) {
	args := []string{"ipmi_sim", "-c", conf, "-f", emu, "-s", stateDir, "-n"}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	if err := Check("ipmi_sim"); err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ipmi_sim: %w", err)
	}
	return cmd, nil
}

// BMC is a node's baseboard management controller: ipmi_sim on a host of
// its own on the rack's segment, listening for IPMI over LAN (lanplus)
// on Addr:623 like a real BMC's dedicated port. Its chassis is the node:
// power-on starts the node's QEMU (a new process each time, so each
// power-on is a cold boot), power-off kills it, soft-off presses the
// ACPI power button, reset resets it. The boot device it keeps is only
// read back: QEMU ignores it, and the node network-boots every time. On
// x86-64 the node also gets an in-band interface to it (QEMU's
// ipmi-bmc-extern behind an ISA KCS), where the node's OS reads the BMC's
// LAN address and manages its users.
type BMC struct {
	Addr           netip.Addr
	MAC            net.HardwareAddr
	User, Password string
	// Namespace is the BMC's host, where ipmitool reaches it.
	Namespace string

	rack     *Rack
	node     int
	template *VM
	ctx      context.Context
	dir      string
	sim      *exec.Cmd
	simLog   syncbuf.Buffer
	simDone  chan struct{}
	ctl      net.Listener

	closeOnce sync.Once

	mu    sync.Mutex
	vm    *VM
	boots []*VM
	dev   string
	calls []string
}

// BMCPort is the IPMI-over-LAN port, RMCP's 623.
const BMCPort = 623

// AddBMC gives node i a BMC at addr (on the rack's segment, outside the
// DHCP range) with an administrator user and password. The node must not
// have been powered on through the rack: from now on its power is the
// BMC's. ctx bounds the node's QEMU processes.
func (r *Rack) AddBMC(ctx context.Context, i int, addr netip.Addr, user, password string) (*BMC, error) {
	if i < 0 || i >= len(r.VMs) {
		return nil, fmt.Errorf("lab bmc: no node %d", i)
	}
	if err := Check("ipmi_sim", "ipmitool"); err != nil {
		return nil, fmt.Errorf("lab bmc: %w", err)
	}
	if !r.Net.Prefix().Contains(addr) {
		return nil, fmt.Errorf("lab bmc: %s is not on the rack's segment %s", addr, r.Net.Prefix())
	}
	b := &BMC{Addr: addr, MAC: net.HardwareAddr{0x02, 0x00, 0x1b, 0x3c, byte(i), 0x01}, User: user, Password: password,
		rack: r, node: i, ctx: ctx, dir: filepath.Join(r.opts.Dir, fmt.Sprintf("bmc%d", i)), dev: "none", simDone: make(chan struct{})}
	b.template = r.VMs[i].clone(r.VMs[i].Name)
	b.template.Reboot = true // a server reboots; only its BMC powers it off
	if err := os.MkdirAll(filepath.Join(b.dir, "state"), 0o700); err != nil {
		return nil, fmt.Errorf("lab bmc: %w", err)
	}
	ns, err := r.Net.AddHost(fmt.Sprintf("b%d", i), fmt.Sprintf("%s/%d", addr, r.Net.Prefix().Bits()))
	if err != nil {
		return nil, fmt.Errorf("lab bmc: %w", err)
	}
	b.Namespace = ns
	// The chassis program asks this process over TCP on the BMC host's
	// loopback: the node's power is a QEMU process the lab owns.
	if err := InNamespace(ns, func() error {
		var err error
		b.ctl, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		return nil, fmt.Errorf("lab bmc: control socket: %w", err)
	}
	go b.serve()
	serial := ""
	if b.template.Arch == boot.ArchX86_64 {
		serial = net.JoinHostPort(addr.String(), "9002")
		b.template.IPMI = serial
	}
	chassis := filepath.Join(b.dir, "chassis.sh")
	script := fmt.Sprintf("#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/%d || exit 1\necho \"$*\" >&3\nwhile IFS= read -r l <&3; do\n\tcase $l in .) exit 0 ;; '!'*) echo \"${l#!}\"; exit 1 ;; esac\n\techo \"$l\"\ndone\nexit 1\n",
		b.ctl.Addr().(*net.TCPAddr).Port)
	lan := filepath.Join(b.dir, "lan.sh")
	files := map[string]string{
		chassis:                          script,
		lan:                              LANProgram(addr, net.IP(net.CIDRMask(r.Net.Prefix().Bits(), 32)).String(), b.MAC),
		filepath.Join(b.dir, "lan.conf"): SimConfig{Addr: addr.String(), Port: BMCPort, User: user, Password: password, Chassis: chassis, LAN: lan, Serial: serial}.Conf(),
		filepath.Join(b.dir, "sim.emu"):  SimEmu,
	}
	for p, text := range files {
		if err := os.WriteFile(p, []byte(text), 0o700); err != nil {
			return nil, fmt.Errorf("lab bmc: %w", err)
		}
	}
	b.sim, err = StartSim(ns, filepath.Join(b.dir, "lan.conf"), filepath.Join(b.dir, "sim.emu"), filepath.Join(b.dir, "state"), &b.simLog)
	if err != nil {
		return nil, fmt.Errorf("lab bmc: %w", err)
	}
	go func() { b.sim.Wait(); close(b.simDone) }()
	r.bmcs = append(r.bmcs, b)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := b.IPMITool("chassis", "power", "status")
		if err == nil {
			return b, nil
		}
		select {
		case <-b.simDone:
			return nil, fmt.Errorf("lab bmc: ipmi_sim exited: %s", b.simLog.String())
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lab bmc: ipmi_sim on %s never answered: %w", addr, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// URL is the BMC as rackboot names it.
func (b *BMC) URL() string { return "ipmi://" + b.Addr.String() }

// IPMITool runs ipmitool against the BMC over lanplus (cipher suite 3)
// as its administrator, from the BMC's own host.
func (b *BMC) IPMITool(args ...string) (string, error) {
	return b.IPMIToolAs(b.User, b.Password, args...)
}

// IPMIToolAs is IPMITool as another user.
func (b *BMC) IPMIToolAs(user, password string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", b.Namespace, "ipmitool", "-I", "lanplus", "-C", "3", "-N", "2", "-R", "2",
		"-H", b.Addr.String(), "-U", user, "-P", password}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Calls are the chassis operations ipmi_sim asked for, in order
// ("set power 1", "set boot pxe").
func (b *BMC) Calls() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.calls...)
}

// Boots is how many times the BMC powered the node on.
func (b *BMC) Boots() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.boots)
}

// VM is the node's current QEMU, or its last one; nil before the first
// power-on.
func (b *BMC) VM() *VM {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.vm
}

// Console is every boot's console, one after the other.
func (b *BMC) Console() string {
	b.mu.Lock()
	boots := append([]*VM(nil), b.boots...)
	b.mu.Unlock()
	var s strings.Builder
	for _, vm := range boots {
		s.WriteString(vm.Console())
	}
	return s.String()
}

// Log is what ipmi_sim printed.
func (b *BMC) Log() string { return b.simLog.String() }

// On reports whether the node's QEMU runs.
func (b *BMC) On() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running()
}

func (b *BMC) running() bool {
	if b.vm == nil {
		return false
	}
	select {
	case <-b.vm.done:
		return false
	default:
		return true
	}
}

// WaitFor waits until the consoles, from byte from of Console on, show
// text matching re, and returns the match.
func (b *BMC) WaitFor(ctx context.Context, re *regexp.Regexp, from int) (string, error) {
	for {
		c := b.Console()
		if from > len(c) {
			from = len(c)
		}
		if m := re.FindString(c[from:]); m != "" {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("bmc of node %d: wait for %q: %w; console ends:\n%s", b.node, re, ctx.Err(), Tail(c, 3000))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// WaitPower waits until the node's power is on (or off).
func (b *BMC) WaitPower(ctx context.Context, on bool) error {
	for b.On() != on {
		select {
		case <-ctx.Done():
			return fmt.Errorf("bmc of node %d: wait for power %v: %w", b.node, on, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

func (b *BMC) serve() {
	for {
		c, err := b.ctl.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			out, err := b.chassis(strings.Fields(line))
			if err != nil {
				fmt.Fprintf(c, "!%v\n", err)
				return
			}
			fmt.Fprintf(c, "%s.\n", out)
		}()
	}
}

// chassis does one chassis_control call: "0x20 get power boot" or "0x20
// set power 1".
func (b *BMC) chassis(args []string) (string, error) {
	if len(args) < 2 {
		return "", errors.New("chassis: no operation")
	}
	op, rest := args[1], args[2:]
	b.mu.Lock()
	defer b.mu.Unlock()
	var out strings.Builder
	switch op {
	case "get":
		for _, n := range rest {
			switch n {
			case "power":
				v := 0
				if b.running() {
					v = 1
				}
				fmt.Fprintf(&out, "power:%d\n", v)
			case "boot":
				fmt.Fprintf(&out, "boot:%s\n", b.dev)
			default:
				return "", fmt.Errorf("chassis: cannot get %s", n)
			}
		}
		return out.String(), nil
	case "set":
		if len(rest)%2 != 0 {
			return "", errors.New("chassis: set needs NAME VALUE pairs")
		}
		for i := 0; i < len(rest); i += 2 {
			n, v := rest[i], rest[i+1]
			b.calls = append(b.calls, "set "+n+" "+v)
			if err := b.set(n, v); err != nil {
				return "", err
			}
		}
		return "", nil
	}
	return "", fmt.Errorf("chassis: unknown operation %q", op)
}

func (b *BMC) set(name, value string) error {
	switch name {
	case "boot":
		b.dev = value
		return nil
	case "power":
		if value == "0" {
			if b.running() {
				b.vm.Kill()
			}
			return nil
		}
		if b.running() {
			return nil
		}
		vm := b.template.clone(fmt.Sprintf("%s-on%d", b.template.Name, len(b.boots)+1))
		vm.Monitor = filepath.Join(b.dir, vm.Name+".monitor")
		if err := vm.Start(b.ctx, b.rack.Net, b.rack.opts.Dir); err != nil {
			return fmt.Errorf("power on: %w", err)
		}
		b.vm = vm
		b.boots = append(b.boots, vm)
		return nil
	case "reset", "shutdown":
		if !b.running() {
			return nil
		}
		cmd := "system_reset"
		if name == "shutdown" {
			cmd = "system_powerdown"
		}
		return b.vm.monitor(cmd)
	}
	return fmt.Errorf("chassis: cannot set %s", name)
}

// Close stops ipmi_sim and the node's QEMU.
func (b *BMC) Close() {
	b.closeOnce.Do(func() {
		b.ctl.Close()
		if b.sim != nil && b.sim.Process != nil {
			syscall.Kill(-b.sim.Process.Pid, syscall.SIGKILL)
			<-b.simDone
		}
		b.mu.Lock()
		vm := b.vm
		b.mu.Unlock()
		if vm != nil {
			vm.Stop()
		}
	})
}

// SysRq presses Alt-SysRq-key on the VM's keyboard (x86-64: AArch64's
// virt machine has none), through its monitor: "f", say, has the kernel's
// OOM killer end the process it likes least, as if memory ran out. The
// guest's kernel must allow it (sysrq_always_enabled on its command
// line: Debian's default leaves out signalling processes).
func (v *VM) SysRq(key string) error { return v.monitor("sendkey alt-sysrq-" + key) }

// monitor sends one command to the VM's QEMU monitor.
func (v *VM) monitor(cmd string) error {
	if v.Monitor == "" {
		return fmt.Errorf("vm %s: no monitor", v.Name)
	}
	c, err := net.DialTimeout("unix", v.Monitor, 5*time.Second)
	if err != nil {
		return fmt.Errorf("vm %s: monitor: %w", v.Name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return fmt.Errorf("vm %s: monitor: %w", v.Name, err)
	}
	// The monitor echoes the command once it has read it.
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("vm %s: monitor %s: %w", v.Name, cmd, err)
		}
		if strings.Contains(line, cmd) {
			return nil
		}
	}
}
