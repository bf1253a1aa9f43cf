package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/rackboot/rackboot/boot"
)

// NodeSpec is one machine of a virtual rack.
type NodeSpec struct {
	Name     string
	Arch     boot.Arch
	Firmware string // FirmwareUEFI, FirmwareBIOS or FirmwareUEFISecureBoot
	NICs     int    // default 2; the first one boots
	DiskGiB  int    // an empty sparse disk of this size; default 8, -1 for none
	// NVMeMiB adds an empty NVMe drive of this size (serial
	// "rackboot-nvme"), beside the virtio disk.
	NVMeMiB  int
	MemoryMB int // default 1024
	CPUs     int // default 1
	// Reboot lets the node reboot instead of powering off.
	Reboot bool
	// HTTPBoot makes the node's UEFI firmware boot over HTTP, its PXE
	// (TFTP) client off.
	HTTPBoot bool
	// NoRNG leaves out the hardware RNG (virtio-rng).
	NoRNG bool
	// Monitor gives the node a QEMU monitor (NAME.monitor in the rack's
	// dir), for SysRq.
	Monitor bool
}

// RackOptions describe a virtual rack. Zero values are defaults.
type RackOptions struct {
	// Name is the network namespace (default "rackboot-lab").
	Name string
	// Prefix is the rack's segment (default 10.99.0.0/24); rackboot
	// serves on its first address and leases .100 to .199.
	Prefix netip.Prefix
	// HostLink is a /30 joining the host to the namespace (default
	// 10.99.255.0/30): its first address is the host's, its second the
	// namespace's, where the host reaches rackboot's HTTP.
	HostLink netip.Prefix
	// Binary is the rackboot binary to serve with.
	Binary string
	// DataDir is rackboot's data dir: boot loaders and agent ramdisks.
	DataDir string
	// Dir receives the disks, firmware variables, consoles and the
	// server's log.
	Dir string
	// ServeArgs are more flags for rackboot serve.
	ServeArgs []string
	Nodes     []NodeSpec
}

// Rack is a running virtual rack: a namespace with a bridge, rackboot
// serving on it authoritatively, and QEMU nodes that network-boot through
// it.
type Rack struct {
	Net *Net
	// URL is rackboot's HTTP as the host reaches it.
	URL string
	// VMs are the nodes, in the order of RackOptions.Nodes.
	VMs []*VM

	opts     RackOptions
	server   *exec.Cmd
	exited   chan struct{}
	hostIf   string
	serverMu sync.Mutex
	log      *os.File
	// bmcs power their nodes; Close stops them first.
	bmcs []*BMC
}

func (o *RackOptions) defaults() {
	if o.Name == "" {
		o.Name = "rackboot-lab"
	}
	if !o.Prefix.IsValid() {
		o.Prefix = netip.MustParsePrefix("10.99.0.0/24")
	}
	if !o.HostLink.IsValid() {
		o.HostLink = netip.MustParsePrefix("10.99.255.0/30")
	}
}

// hostIfName derives the host side of the host link from the namespace,
// so two racks never fight over one name.
func hostIfName(ns string) string {
	h := sha256.Sum256([]byte(ns))
	return "rb" + hex.EncodeToString(h[:5])
}

// MAC is the address rackboot's labs give NIC nic of node i.
func MAC(i, nic int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, 0x1a, byte(i), byte(nic)}
}

// linkFree refuses a host link whose addresses the host already has: the
// rack would start and then not be reachable, which says nothing about
// why. A killed lab leaves its link behind under another name.
func linkFree(p netip.Prefix) error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("lab rack: list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ad, ok := netip.AddrFromSlice(ipn.IP); ok && p.Contains(ad.Unmap()) {
				return fmt.Errorf("lab rack: host link %s: %s already has %s (a lab left behind? ip link del %s)", p, ifc.Name, ipn, ifc.Name)
			}
		}
	}
	return nil
}

// StartRack builds the rack and starts rackboot in it; the nodes stay off
// until PowerOn.
func StartRack(ctx context.Context, o RackOptions) (r *Rack, err error) {
	o.defaults()
	if o.Binary == "" || o.DataDir == "" || o.Dir == "" {
		return nil, errors.New("lab rack: Binary, DataDir and Dir are needed")
	}
	if o.HostLink.Bits() != 30 || !o.HostLink.Addr().Is4() {
		return nil, fmt.Errorf("lab rack: host link %s: want an IPv4 /30", o.HostLink)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab rack: %w", err)
	}
	if err := linkFree(o.HostLink); err != nil {
		return nil, err
	}
	n, err := NewNet(ctx, o.Name, o.Prefix)
	if err != nil {
		return nil, err
	}
	r = &Rack{Net: n, opts: o, hostIf: hostIfName(o.Name)}
	defer func() {
		if err != nil {
			r.Close()
			r = nil
		}
	}()
	host := o.HostLink.Masked().Addr().Next()
	inNS := host.Next()
	ip(ctx, "link", "del", r.hostIf) // a leftover of a killed run
	for _, s := range [][]string{
		{"link", "add", r.hostIf, "type", "veth", "peer", "name", "uplink", "netns", o.Name},
		{"addr", "add", fmt.Sprintf("%s/30", host), "dev", r.hostIf},
		{"link", "set", r.hostIf, "up"},
		{"-n", o.Name, "addr", "add", fmt.Sprintf("%s/30", inNS), "dev", "uplink"},
		{"-n", o.Name, "link", "set", "uplink", "up"},
	} {
		if err := ip(ctx, s...); err != nil {
			return r, fmt.Errorf("lab rack: host link: %w", err)
		}
	}
	r.URL = fmt.Sprintf("http://%s:8080", inNS)

	first := o.Prefix.Masked().Addr()
	for i := 0; i < 100; i++ {
		first = first.Next()
	}
	last := first
	for i := 0; i < 99; i++ {
		last = last.Next()
	}
	r.log, err = os.Create(filepath.Join(o.Dir, "rackboot.log"))
	if err != nil {
		return r, fmt.Errorf("lab rack: %w", err)
	}
	args := append([]string{"serve", "--data-dir", o.DataDir, "--interface", n.Bridge(), "--dhcp-mode", "authoritative",
		"--dhcp-range", first.String() + "-" + last.String(), "--http-addr", ":8080"}, o.ServeArgs...)
	r.server = n.Command(context.WithoutCancel(ctx), o.Binary, args...)
	r.server.Stdout, r.server.Stderr = r.log, r.log
	if err := r.server.Start(); err != nil {
		return r, fmt.Errorf("lab rack: start rackboot: %w", err)
	}
	r.exited = make(chan struct{})
	var waitErr error
	go func() { waitErr = r.server.Wait(); close(r.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(r.URL + "/api/v1/openapi.json")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-r.exited:
			return r, fmt.Errorf("lab rack: rackboot exited: %v: %s", waitErr, Tail(r.ServerLog(), 2000))
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("lab rack: rackboot did not answer on %s (log: %s)", r.URL, r.log.Name())
		}
	}

	for i, spec := range o.Nodes {
		vm, err := r.vm(i, spec)
		if err != nil {
			return r, err
		}
		r.VMs = append(r.VMs, vm)
	}
	return r, nil
}

func (r *Rack) vm(i int, spec NodeSpec) (*VM, error) {
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("node%d", i)
	}
	if spec.NICs == 0 {
		spec.NICs = 2
	}
	vm := &VM{Name: spec.Name, Arch: spec.Arch, Firmware: spec.Firmware, MemoryMB: spec.MemoryMB, CPUs: spec.CPUs, Reboot: spec.Reboot, HTTPBoot: spec.HTTPBoot, NoRNG: spec.NoRNG}
	if spec.Monitor {
		vm.Monitor = filepath.Join(r.opts.Dir, spec.Name+".monitor")
	}
	for nic := 0; nic < spec.NICs; nic++ {
		tap, err := r.Net.AddTap(fmt.Sprintf("t%d-%d", i, nic))
		if err != nil {
			return nil, err
		}
		if nic == 0 {
			vm.MAC, vm.Tap = MAC(i, nic), tap
		} else {
			vm.ExtraNICs = append(vm.ExtraNICs, NIC{MAC: MAC(i, nic), Tap: tap})
		}
	}
	if spec.DiskGiB == 0 {
		spec.DiskGiB = 8
	}
	sparse := func(name string, size int64) (string, error) {
		p := filepath.Join(r.opts.Dir, name)
		f, err := os.Create(p)
		if err != nil {
			return "", fmt.Errorf("lab rack: disk of %s: %w", spec.Name, err)
		}
		err = f.Truncate(size)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("lab rack: disk of %s: %w", spec.Name, err)
		}
		return p, nil
	}
	var err error
	if spec.DiskGiB > 0 {
		if vm.Disk, err = sparse(spec.Name+".img", int64(spec.DiskGiB)<<30); err != nil {
			return nil, err
		}
	}
	if spec.NVMeMiB > 0 {
		if vm.NVMe, err = sparse(spec.Name+"-nvme.img", int64(spec.NVMeMiB)<<20); err != nil {
			return nil, err
		}
	}
	if err := Check(vm.Needs()...); err != nil {
		return nil, fmt.Errorf("lab rack: %s: %w", spec.Name, err)
	}
	return vm, nil
}

// PowerOn starts node i; its life ends with ctx or Close.
func (r *Rack) PowerOn(ctx context.Context, i int) error {
	return r.VMs[i].Start(ctx, r.Net, r.opts.Dir)
}

// ServerLog returns what rackboot has logged so far.
func (r *Rack) ServerLog() string {
	if r.log == nil {
		return ""
	}
	b, _ := os.ReadFile(r.log.Name())
	return string(b)
}

// PowerCycle stops node i, if it still runs, and powers it on again as a
// new QEMU process with the same hardware and disks, as a cold boot
// would: its console (Console, NAME-again.console) starts empty.
func (r *Rack) PowerCycle(ctx context.Context, i int) error {
	old := r.VMs[i]
	old.Stop()
	r.VMs[i] = old.clone(old.Name + "-again")
	return r.PowerOn(ctx, i)
}

// Close powers the nodes off, stops rackboot and removes the namespace
// and the host link. It is safe to call more than once.
func (r *Rack) Close() {
	for _, b := range r.bmcs {
		b.Close()
	}
	for _, vm := range r.VMs {
		vm.Stop()
	}
	r.serverMu.Lock()
	if r.server != nil && r.server.Process != nil {
		r.server.Process.Signal(os.Interrupt)
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			r.server.Process.Kill()
			<-r.exited
		}
		r.server = nil
	}
	r.serverMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ip(ctx, "link", "del", r.hostIf)
	r.Net.Close()
	if r.log != nil {
		r.log.Close()
	}
}

// Tail is the last n bytes of s, for error messages that quote a
// console or a log.
func Tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
