package lab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Libvirtd is a libvirt daemon of the machine's libvirt-daemon-system
// package, run for a lab with none of the machine's libvirt state, inside
// a lab network namespace so that its VMs' taps join the lab's bridge. In
// a mount namespace of its own, /run is an empty tmpfs and /run/libvirt,
// /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt
// are directories under Root. A system libvirtd keeps its sockets, domains,
// networks and pools. The listening socket is made here and handed over
// through systemd's socket activation (LISTEN_FDS), so it is there before
// the daemon and outside its namespace.
type Libvirtd struct {
	// Root holds the daemon's directories; Pool is a directory for a
	// storage pool.
	Root, Pool string
	// Socket is the daemon's unix socket: URI is
	// qemu+unix:///system?socket=Socket.
	Socket string
	// TCPAddr and TLSAddr are where it serves qemu+tcp (no
	// authentication) and qemu+tls (127.0.0.1:PORT), when asked.
	TCPAddr, TLSAddr string
	cmd              *exec.Cmd
	exited           chan struct{}
	parent           *parentThread
}

// URI is the daemon's libvirt URI.
func (d *Libvirtd) URI() string { return "qemu+unix:///system?socket=" + d.Socket }

const libvirtdConf = `unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
auth_tcp = "none"
log_outputs = "3:file:%[1]s/log/libvirtd.log"
`

const libvirtdTLSConf = `ca_file = "%[1]s/pki/cacert.pem"
cert_file = "%[1]s/pki/servercert.pem"
key_file = "%[1]s/pki/serverkey.pem"
`

// LibvirtdOptions are what a daemon serves beside its unix socket.
type LibvirtdOptions struct {
	// TCP serves qemu+tcp without authentication on 127.0.0.1.
	TCP bool
	// TLS serves qemu+tls on 127.0.0.1.
	TLS *LibvirtdTLS
}

// LibvirtdTLS makes the daemon serve qemu+tls too: its CA, certificate
// and key as PEM, and more lines for libvirtd.conf (a
// tls_allowed_dn_list).
type LibvirtdTLS struct {
	CACert, Cert, Key []byte
	Conf              string
}

// qemuConf runs QEMU as root without confinement, cgroups or private /dev:
// the lab's files are root's, the machine may have no AppArmor, and the
// cgroup names libvirt picks could collide with another daemon's.
// stdio_handler "file" spares a virtlogd.
const qemuConf = `user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
`

// libvirtdScript runs in the new mount namespace (Go makes it private
// before exec; ip netns exec then enters the lab's network namespace and
// becomes the shell) and becomes libvirtd, keeping its pid for LISTEN_PID.
// An empty /etc/libvirt: the package's own would autostart its default
// network, a bridge and a dnsmasq.
const libvirtdScript = `set -e
root=$1
export LISTEN_PID=$$
mount -t tmpfs -o mode=0755 rackboot-libvirtd /run
mkdir /run/libvirt /run/lock
mount --bind "$root/run" /run/libvirt
mount --bind "$root/etc" /etc/libvirt
mount --bind "$root/lib" /var/lib/libvirt
mount --bind "$root/cache" /var/cache/libvirt
mount --bind "$root/log" /var/log/libvirt
exec libvirtd -f "$root/etc/libvirtd.conf" -p "$root/libvirtd.pid"
`

// StartLibvirtd starts a daemon in n (nil: in this machine's network
// namespace) and waits until it is up.
func StartLibvirtd(ctx context.Context, n *Net, o LibvirtdOptions) (*Libvirtd, error) {
	t := o.TLS
	if err := Check("libvirtd", "qemu-system-x86_64"); err != nil {
		return nil, fmt.Errorf("lab libvirtd: %w", err)
	}
	for _, d := range []string{"/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"} {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("lab libvirtd: %w (libvirt-daemon-system makes it: make deps)", err)
		}
	}
	// A unix socket's path must fit in sun_path (108 bytes).
	root, err := os.MkdirTemp("", "rblv")
	if err != nil {
		return nil, fmt.Errorf("lab libvirtd: %w", err)
	}
	d := &Libvirtd{Root: root, Pool: filepath.Join(root, "pool"), Socket: filepath.Join(root, "libvirt-sock")}
	fail := func(err error) (*Libvirtd, error) {
		d.Close()
		return nil, fmt.Errorf("lab libvirtd: %w", err)
	}
	for _, dir := range []string{"etc", "run", "lib", "cache", "log", "pool", "pki"} {
		if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
			return fail(err)
		}
	}
	files := map[string]string{"etc/libvirtd.conf": fmt.Sprintf(libvirtdConf, root), "etc/qemu.conf": qemuConf}
	if t != nil {
		files["etc/libvirtd.conf"] += fmt.Sprintf(libvirtdTLSConf, root) + t.Conf
		files["pki/cacert.pem"], files["pki/servercert.pem"], files["pki/serverkey.pem"] = string(t.CACert), string(t.Cert), string(t.Key)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o600); err != nil {
			return fail(err)
		}
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: d.Socket, Net: "unix"})
	if err != nil {
		return fail(err)
	}
	ul.SetUnlinkOnClose(false)
	uf, err := ul.File()
	ul.Close()
	if err != nil {
		return fail(err)
	}
	defer uf.Close()
	fds, names := []*os.File{uf}, "libvirtd.socket"
	// A listener lives in the namespace it was made in: this machine's
	// loopback, where the client is.
	listen := func(addr *string, name string) error {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		*addr = l.Addr().String()
		f, err := l.File()
		l.Close()
		if err != nil {
			return err
		}
		fds, names = append(fds, f), names+":"+name
		return nil
	}
	defer func() {
		for _, f := range fds[1:] {
			f.Close()
		}
	}()
	if o.TCP {
		if err := listen(&d.TCPAddr, "libvirtd-tcp.socket"); err != nil {
			return fail(err)
		}
	}
	if t != nil {
		if err := listen(&d.TLSAddr, "libvirtd-tls.socket"); err != nil {
			return fail(err)
		}
	}
	out, err := os.Create(filepath.Join(root, "log", "stderr"))
	if err != nil {
		return fail(err)
	}
	defer out.Close()
	if n != nil {
		d.cmd = n.Command(context.WithoutCancel(ctx), "sh", "-c", libvirtdScript, "sh", root)
	} else {
		d.cmd = exec.Command("sh", "-c", libvirtdScript, "sh", root)
	}
	d.cmd.Dir = root
	d.cmd.Stdout, d.cmd.Stderr = out, out
	d.cmd.ExtraFiles = fds // from fd 3
	d.cmd.Env = append(os.Environ(), fmt.Sprintf("LISTEN_FDS=%d", len(fds)), "LISTEN_FDNAMES="+names)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	d.parent = newParentThread()
	if err := d.parent.Start(d.cmd); err != nil {
		return fail(err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	// The socket accepts from the start (it is ours); the daemon is up
	// when its pid file is written.
	for deadline := time.Now().Add(60 * time.Second); ; {
		if _, err := os.Stat(filepath.Join(root, "libvirtd.pid")); err == nil {
			return d, nil
		}
		select {
		case <-d.exited:
			return fail(fmt.Errorf("libvirtd exited: %s", d.Log()))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("libvirtd did not start: %s", d.Log()))
		}
	}
}

// Log returns the ends of the daemon's logs and its QEMUs'.
func (d *Libvirtd) Log() string {
	var b strings.Builder
	for _, pat := range []string{"log/stderr", "log/libvirtd.log", "log/qemu/*.log"} {
		files, _ := filepath.Glob(filepath.Join(d.Root, pat))
		for _, f := range files {
			fmt.Fprintf(&b, "%s:\n%s\n", f, Tail(string(must(os.ReadFile(f))), 6000))
		}
	}
	return b.String()
}

func must(b []byte, _ error) []byte { return b }

// Close stops the daemon by its pid, then any QEMU it left running
// (libvirtd leaves its guests running when it exits), found through the
// pid files in its own run directory, and removes Root.
func (d *Libvirtd) Close() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(15 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if d.parent != nil {
		d.parent.Close()
		d.parent = nil
	}
	pids, _ := filepath.Glob(filepath.Join(d.Root, "run", "qemu", "*.pid"))
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		guest := "guest=" + strings.TrimSuffix(filepath.Base(f), ".pid")
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmdline, []byte(guest)) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	os.RemoveAll(d.Root)
}
