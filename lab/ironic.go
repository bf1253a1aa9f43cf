package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// IronicConductor is one ironic-conductor process. Each has its own
// config file, log, roots and conductor group; all share one API and one
// database.
type IronicConductor struct {
	// Name names its config, log and default roots under the Dir: unique,
	// a plain file name.
	Name string
	// Group is [conductor]conductor_group: nodes with this
	// conductor_group are handled by this conductor only.
	Group string
	// HTTPURL is [deploy]http_url, where nodes fetch what lands in
	// HTTPRoot (boot.ipxe, <uuid>/config, kernels); it is written into the
	// DHCP options and iPXE configs, never fetched by Ironic itself.
	HTTPURL string
	// TFTPServer is [pxe]tftp_server, written into the DHCP options.
	// Empty: 127.0.0.1.
	TFTPServer string
	// TFTPRoot and HTTPRoot are [pxe]tftp_root and [deploy]http_root.
	// Empty: Dir/<Name>/tftpboot and Dir/<Name>/httpboot.
	TFTPRoot, HTTPRoot string
	// Host is set by StartIronic: the conductor's [DEFAULT]host, an
	// address on loopback. Ironic 21's JSON-RPC client connects to a
	// conductor at its host name and the one [json_rpc]port of the
	// caller's config, so conductors on one machine need an address each
	// (127.0.0.2, 127.0.0.3, ...; Linux routes all of 127/8 to lo).
	Host string
}

// IronicOptions say where an Ironic keeps its state and where its dnsmasq
// DHCP provider writes.
type IronicOptions struct {
	// Dir holds everything else: config, database, logs, caches, state.
	Dir string
	// HostsDir, OptsDir and LeaseFile are [dnsmasq]dhcp_hostsdir,
	// dhcp_optsdir and dhcp_leasefile. The lease file is created empty if
	// it is missing: the provider opens it for reading when it links a
	// GRUB config by the node's IP address (boot interface pxe, UEFI), and
	// fails the deploy when it is not there.
	HostsDir, OptsDir, LeaseFile string
	// Conductors are started in order; at least one.
	Conductors []IronicConductor
	// Conf is appended to every process's ironic.conf, before each
	// conductor's own settings. oslo.config merges repeated sections and
	// the last value wins, so it may set any option again ("[pxe]\n...")
	// but a conductor's. The one a lab with real nodes wants is
	// [service_catalog]endpoint_override, the agent's ipa-api-url in the
	// boot configs: by default URL, on 127.0.0.1.
	Conf string
	// Command makes the command of each of Ironic's programs and of its
	// client: Net.Command runs them inside a lab's namespace, where a
	// rackboot in the same namespace reaches the API on loopback. Nil
	// runs them here.
	Command func(ctx context.Context, prog string, args ...string) *exec.Cmd
}

// Ironic is an OpenStack Ironic (Debian's ironic-api and ironic-conductor
// packages) run for a test: standalone, no authentication, SQLite, JSON-RPC
// between the API and its conductors, nothing of the machine's /etc/ironic
// or /var/lib/ironic used.
type Ironic struct {
	// URL is the API's endpoint, http://127.0.0.1:PORT.
	URL string
	// Dir is IronicOptions.Dir.
	Dir string
	// Conductors are the options' conductors with Host and the roots
	// filled in.
	Conductors []IronicConductor
	procs      []*ironicProc
	command    func(ctx context.Context, prog string, args ...string) *exec.Cmd
	parent     *parentThread
}

type ironicProc struct {
	name, log string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// ironicAPIVersion is asked for in the requests StartIronic makes itself:
// 1.49 is the first with /v1/conductors and conductor groups in it.
const ironicAPIVersion = "1.49"

// ironicConf is the part of ironic.conf that every process shares. Why
// each setting is there:
//   - enabled_*: fake-hardware with fake power and management, so no BMC
//     is needed, and the real pxe and ipxe boot interfaces whose files the
//     tests want to see; network noop and storage noop because flat and
//     cinder need Neutron and Cinder.
//   - automated_clean false: provide goes straight to available, no agent.
//   - file_url_allowed_paths: Ironic 21.4 refuses file:// images and
//     deploy kernels outside /var/lib/ironic and a few others.
//   - service_catalog endpoint_override: the agent's ipa-api-url, which
//     prepare_ramdisk needs; without Keystone it comes from here.
//   - policy_dirs absolute: oslo.config looks for relative ones (the
//     default is policy.d) in /etc/ironic too.
//   - the database's timeout: the API and every conductor write to the
//     one SQLite file (heartbeats, locks); Python's default busy timeout,
//     5 s, ends in "database is locked" when conductors register at once
//     on a loaded machine (seen with two on two cores).
//   - the paths: every default is under /var/lib/ironic, /tftpboot or
//     /httpboot.
//   - pxe_bootfile_name_by_arch and pxe_config_template_by_arch: Ironic has
//     no AArch64 defaults; its UEFI GRUB template uses linuxefi and
//     initrdefi, which only x86 GRUB builds know.
const ironicConf = `[DEFAULT]
auth_strategy = noauth
rpc_transport = json-rpc
debug = true
use_stderr = true
state_path = %[1]s/state
tempdir = %[1]s/tmp
my_ip = 127.0.0.1
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = ipxe,pxe,fake
enabled_deploy_interfaces = direct,ramdisk,fake
enabled_power_interfaces = fake
enabled_management_interfaces = fake
enabled_inspect_interfaces = no-inspect,fake
enabled_network_interfaces = noop
default_network_interface = noop
enabled_storage_interfaces = noop
enabled_console_interfaces = no-console,fake
enabled_raid_interfaces = no-raid,fake
enabled_bios_interfaces = no-bios,fake
enabled_rescue_interfaces = no-rescue,fake
enabled_vendor_interfaces = no-vendor,fake
[api]
host_ip = 127.0.0.1
port = %[2]d
api_workers = 1
[database]
connection = sqlite:///%[1]s/ironic.sqlite?timeout=60
[json_rpc]
auth_strategy = noauth
port = %[3]d
[conductor]
automated_clean = false
file_url_allowed_paths = %[1]s
[service_catalog]
auth_type = none
endpoint_override = http://127.0.0.1:%[2]d
[oslo_policy]
policy_file = %[1]s/policy.yaml
policy_dirs = %[1]s/policy.d
[oslo_concurrency]
lock_path = %[1]s/locks
[agent]
deploy_logs_local_path = %[1]s/deploy-logs
certificates_path = %[1]s/certificates
[deploy]
iso_master_path = %[1]s/master_iso_images
[dhcp]
dhcp_provider = dnsmasq
[dnsmasq]
dhcp_hostsdir = %[4]s
dhcp_optsdir = %[5]s
dhcp_leasefile = %[6]s
[pxe]
images_path = %[1]s/images
instance_master_path = %[1]s/master_images
pxe_bootfile_name_by_arch = aarch64:grubaa64.efi
pxe_config_template_by_arch = aarch64:%[1]s/grub_aarch64_config.template
`

// ironicConductorConf is one conductor's own part.
const ironicConductorConf = `[DEFAULT]
host = %[1]s
[json_rpc]
host_ip = %[1]s
[conductor]
conductor_group = %[2]s
[deploy]
http_url = %[3]s
http_root = %[4]s
[pxe]
tftp_server = %[5]s
tftp_root = %[6]s
tftp_master_path = %[7]s/master_images
`

// grubAArch64Template is Ironic's pxe_grub_config.template with linux and
// initrd for linuxefi and initrdefi.
const grubAArch64Template = `set default=deploy
set timeout=5
set hidden_timeout_quiet=false

menuentry "deploy"  {
    linux {{ pxe_options.deployment_aki_path }} selinux=0 troubleshoot=0 text {{ pxe_options.pxe_append_params|default("", true) }} boot_server={{pxe_options.tftp_server}}
    initrd {{ pxe_options.deployment_ari_path }}
}

menuentry "boot_ramdisk"  {
    linux {{ pxe_options.aki_path }} root=/dev/ram0 text {{ pxe_options.pxe_append_params|default("", true) }} {{ pxe_options.ramdisk_opts|default('', true) }}
    initrd {{ pxe_options.ari_path }}
}
`

// ironicPy, written to Dir/ironic-run.py, runs one of Ironic's programs
// (python3 ironic-run.py MODULE ARGS...: ironic.cmd.api,
// ironic.cmd.conductor, ironic.cmd.dbsync) with
// every SQLite transaction begun IMMEDIATE. oslo.db begins them DEFERRED:
// a transaction that reads and then writes asks for the write lock late,
// and when another process wrote in between SQLite refuses at once with
// "database is locked", busy timeout or not (seen in do_node_deploy with
// two conductors). Upstream runs Ironic on SQLite as one process only;
// here the API and each conductor are processes of their own on one file.
// IMMEDIATE takes the write lock at BEGIN, where the busy timeout applies,
// so they wait for each other instead.
const ironicPy = `import sqlite3, sqlite3.dbapi2, sys

class Cursor(sqlite3.Cursor):
    def execute(self, sql, *args):
        if sql.strip().upper() == "BEGIN":
            sql = "BEGIN IMMEDIATE"
        return super().execute(sql, *args)

class Connection(sqlite3.Connection):
    def cursor(self, factory=Cursor):
        return super().cursor(factory)
    def execute(self, sql, *args):
        return self.cursor().execute(sql, *args)

_connect = sqlite3.dbapi2.connect

def connect(*args, **kwargs):
    kwargs.setdefault("factory", Connection)
    return _connect(*args, **kwargs)

sqlite3.connect = sqlite3.dbapi2.connect = connect
module = sys.argv.pop(1)
sys.argv[0] = "ironic-" + module.rsplit(".", 1)[1]
sys.exit(__import__(module, fromlist=["main"]).main())
`

// StartIronic creates the schema, starts the API and the conductors, and
// returns once the API answers and every conductor is registered alive
// with its group. On error nothing it started is left running.
func StartIronic(ctx context.Context, o IronicOptions) (*Ironic, error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("lab ironic: %w", err)
	}
	if err := Check("ironic-api", "ironic-conductor", "baremetal"); err != nil {
		return nil, fmt.Errorf("lab ironic: %w", err)
	}
	// Absolute: Ironic's processes run in Dir, and the paths land in
	// DHCP options (210, the TFTP path prefix).
	for _, p := range []*string{&o.Dir, &o.HostsDir, &o.OptsDir, &o.LeaseFile} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("lab ironic: %w", err)
		}
		*p = abs
	}
	dir := o.Dir
	ir := &Ironic{Dir: dir, command: o.Command, parent: newParentThread()}
	if ir.command == nil {
		ir.command = exec.CommandContext
	}
	fail := func(op string, err error) (*Ironic, error) {
		ir.Stop()
		return nil, fmt.Errorf("lab ironic: %s: %w", op, err)
	}
	for _, d := range []string{"conf.d", "policy.d", "state", "tmp", "locks", "logs", "images", "master_images", "master_iso_images", "deploy-logs", "certificates", "home", o.HostsDir, o.OptsDir, filepath.Dir(o.LeaseFile)} {
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail("make directories", err)
		}
	}
	if f, err := os.OpenFile(o.LeaseFile, os.O_CREATE|os.O_RDONLY, 0o644); err != nil {
		return fail("create the lease file", err)
	} else {
		f.Close()
	}
	apiPort, err := freePort("127.0.0.1")
	if err != nil {
		return fail("pick the API port", err)
	}
	hosts := make([]string, len(o.Conductors))
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.0.0.%d", i+2)
	}
	rpcPort, err := freePort(hosts...)
	if err != nil {
		return fail("pick the JSON-RPC port", err)
	}
	ir.URL = fmt.Sprintf("http://127.0.0.1:%d", apiPort)
	common := fmt.Sprintf(ironicConf, dir, apiPort, rpcPort, o.HostsDir, o.OptsDir, o.LeaseFile)
	files := map[string]string{
		"ironic.conf":                  common + o.Conf,
		"policy.yaml":                  "{}\n",
		"ironic-run.py":                ironicPy,
		"grub_aarch64_config.template": grubAArch64Template,
	}
	for i, c := range o.Conductors {
		c.Host = hosts[i]
		if c.TFTPServer == "" {
			c.TFTPServer = "127.0.0.1"
		}
		base := filepath.Join(dir, c.Name)
		if c.TFTPRoot == "" {
			c.TFTPRoot = filepath.Join(base, "tftpboot")
		}
		if c.HTTPRoot == "" {
			c.HTTPRoot = filepath.Join(base, "httpboot")
		}
		var err error
		if c.TFTPRoot, err = filepath.Abs(c.TFTPRoot); err != nil {
			return fail("make "+c.Name+"'s roots absolute", err)
		}
		if c.HTTPRoot, err = filepath.Abs(c.HTTPRoot); err != nil {
			return fail("make "+c.Name+"'s roots absolute", err)
		}
		for _, d := range []string{c.TFTPRoot, c.HTTPRoot, filepath.Join(base, "master_images")} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fail("make directories", err)
			}
		}
		// Each conductor's own settings come last, after Conf, so that
		// they win.
		files[c.Name+".conf"] = common + o.Conf + "\n" + fmt.Sprintf(ironicConductorConf, c.Host, c.Group, c.HTTPURL, c.HTTPRoot, c.TFTPServer, c.TFTPRoot, base)
		ir.Conductors = append(ir.Conductors, c)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return fail("write "+name, err)
		}
	}
	conf := filepath.Join(dir, "ironic.conf")
	dbsync := exec.CommandContext(ctx, "/usr/bin/python3", append([]string{filepath.Join(dir, "ironic-run.py"), "ironic.cmd.dbsync"}, ir.args(conf, "create_schema")...)...)
	dbsync.Env = ir.env()
	if out, err := dbsync.CombinedOutput(); err != nil {
		return fail("ironic-dbsync create_schema", fmt.Errorf("%w: %s", err, Tail(string(out), 4000)))
	}
	// WAL, which the file keeps: readers no longer wait for a writer,
	// nor a writer for readers, which SQLite's default rollback journal
	// makes them do.
	wal := exec.CommandContext(ctx, "/usr/bin/python3", "-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA journal_mode=WAL').fetchone()[0])", filepath.Join(dir, "ironic.sqlite"))
	if out, err := wal.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "wal" {
		return fail("set the database's journal_mode to WAL", fmt.Errorf("%v: %s", err, out))
	}
	if err := ir.start("api", "ironic.cmd.api", conf); err != nil {
		return fail("start ironic-api", err)
	}
	for _, c := range ir.Conductors {
		if err := ir.start(c.Name, "ironic.cmd.conductor", filepath.Join(dir, c.Name+".conf")); err != nil {
			return fail("start ironic-conductor "+c.Name, err)
		}
	}
	if err := ir.waitReady(ctx); err != nil {
		return fail("wait for the API and the conductors", err)
	}
	return ir, nil
}

// check refuses options StartIronic cannot run with.
func (o IronicOptions) check() error {
	if o.Dir == "" || o.HostsDir == "" || o.OptsDir == "" || o.LeaseFile == "" || len(o.Conductors) == 0 {
		return errors.New("Dir, HostsDir, OptsDir, LeaseFile and one conductor at least are needed")
	}
	if len(o.Conductors) > 250 {
		return errors.New("at most 250 conductors: one loopback address each")
	}
	names := map[string]bool{}
	for i, c := range o.Conductors {
		// "api" would share the API's log; a path would leave Dir.
		if c.Name == "" || c.Name != filepath.Base(c.Name) || c.Name == "." || c.Name == ".." || names[c.Name] || c.Name == "api" {
			return fmt.Errorf("conductor %d: name %q is empty, a path, api or used twice", i, c.Name)
		}
		names[c.Name] = true
	}
	return nil
}

// args are a process's command-line arguments. --config-dir names an
// empty directory so that oslo.config does not read the default
// /etc/ironic/ironic.conf.d.
func (ir *Ironic) args(conf string, more ...string) []string {
	return append([]string{"--config-file", conf, "--config-dir", filepath.Join(ir.Dir, "conf.d")}, more...)
}

// env is the processes' environment: no OS_* variables, which the client
// would read, and a HOME of their own, so that no ~/.config/openstack or
// ~/.ironic of the machine's is read.
func (ir *Ironic) env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") && !strings.HasPrefix(e, "HOME=") && !strings.HasPrefix(e, "PYTHON") {
			env = append(env, e)
		}
	}
	return append(env, "HOME="+filepath.Join(ir.Dir, "home"))
}

// start runs a program of Ironic's (its module) in a process group of its own (the
// API forks a worker; the conductor runs tools), logging to logs/NAME.log.
// It outlives ctx: Stop ends it.
func (ir *Ironic) start(name, module, conf string) error {
	logPath := filepath.Join(ir.Dir, "logs", name+".log")
	out, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer out.Close()
	// Not the caller's context: Stop ends the process, by its pid.
	cmd := ir.command(context.Background(), "/usr/bin/python3", append([]string{filepath.Join(ir.Dir, "ironic-run.py"), module}, ir.args(conf)...)...)
	cmd.Dir = ir.Dir
	cmd.Env = ir.env()
	cmd.Stdout, cmd.Stderr = out, out
	// Pdeathsig: a test binary that dies leaves no Ironic behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := ir.parent.Start(cmd); err != nil {
		return err
	}
	p := &ironicProc{name: name, log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	ir.procs = append(ir.procs, p)
	return nil
}

// waitReady polls the API until it answers and lists every conductor
// alive in its group, or a process exits, or two minutes pass.
func (ir *Ironic) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last error
	for {
		for _, p := range ir.procs {
			select {
			case <-p.exited:
				return fmt.Errorf("%s exited (%v): %s", p.name, p.cmd.ProcessState, Tail(string(must(os.ReadFile(p.log))), 4000))
			default:
			}
		}
		last = ir.conductorsAlive(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)\n%s", ctx.Err(), last, ir.Logs(2000))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// conductorsAlive is nil when GET /v1/conductors lists every conductor
// alive with its group.
func (ir *Ironic) conductorsAlive(ctx context.Context) error {
	b, err := ir.Get(ctx, "/v1/conductors?detail=true")
	if err != nil {
		return err
	}
	var body struct {
		Conductors []struct {
			Hostname       string `json:"hostname"`
			ConductorGroup string `json:"conductor_group"`
			Alive          bool   `json:"alive"`
		} `json:"conductors"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return fmt.Errorf("GET /v1/conductors: %w", err)
	}
next:
	for _, c := range ir.Conductors {
		for _, got := range body.Conductors {
			if got.Hostname == c.Host && got.ConductorGroup == c.Group && got.Alive {
				continue next
			}
		}
		return fmt.Errorf("conductor %s (%s, group %q) is not registered alive: %+v", c.Name, c.Host, c.Group, body.Conductors)
	}
	return nil
}

// getScript fetches a URL with Ironic's API version header, from where
// Ironic's programs run (a namespace), and prints the body; a status
// other than 200 fails it.
const getScript = `import sys, urllib.request
r = urllib.request.Request(sys.argv[1], headers={"X-OpenStack-Ironic-API-Version": sys.argv[2]})
sys.stdout.write(urllib.request.urlopen(r, timeout=10).read().decode())
`

// Get returns the body of GET URL+path from Ironic's API, asked from
// where Ironic runs.
func (ir *Ironic) Get(ctx context.Context, path string) ([]byte, error) {
	cmd := ir.command(ctx, "/usr/bin/python3", "-c", getScript, ir.URL+path, ironicAPIVersion)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w: %s", path, err, Tail(strings.TrimSpace(stderr.String()), 300))
	}
	return out, nil
}

// Baremetal runs Ironic's own client, `baremetal --os-endpoint URL
// --os-auth-type none ARGS...`, and returns its standard output; an error
// carries its standard error.
func (ir *Ironic) Baremetal(ctx context.Context, args ...string) ([]byte, error) {
	cmd := ir.command(ctx, "/usr/bin/baremetal", append([]string{"--os-endpoint", ir.URL, "--os-auth-type", "none"}, args...)...)
	cmd.Env = ir.env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("baremetal %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Logs returns the end of every process's log, at most n bytes each.
func (ir *Ironic) Logs(n int) string {
	var b strings.Builder
	for _, p := range ir.procs {
		fmt.Fprintf(&b, "--- %s:\n%s\n", p.log, Tail(string(must(os.ReadFile(p.log))), n))
	}
	return b.String()
}

// Stop ends the processes StartIronic started: SIGTERM to each one's
// process group (its pid is the group's id), SIGKILL after 10 seconds.
// Dir is left for the test's TempDir to remove.
func (ir *Ironic) Stop() error {
	var errs []error
	for i := len(ir.procs) - 1; i >= 0; i-- {
		p := ir.procs[i]
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("lab ironic: %s (pid %d) ignored SIGTERM for 10s", p.name, pgid))
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.exited
		}
	}
	ir.procs = nil
	if ir.parent != nil {
		ir.parent.Close()
		ir.parent = nil
	}
	return errors.Join(errs...)
}

// freePort returns a TCP port free on every one of hosts at the time of
// asking.
func freePort(hosts ...string) (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var others []net.Listener
		for _, h := range hosts[1:] {
			o, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		l.Close()
		for _, o := range others {
			o.Close()
		}
		if ok {
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free on all of %v", hosts)
}
