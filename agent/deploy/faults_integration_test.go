//go:build integration

package deploy_test

// The agent's deploy and wipe tasks, run by the real agent (agent.Agent
// with agent.Work, as rackboot-agent wires them) in a process of its own
// against a loop device, fetching from rackboot's boot-HTTP file server in
// another network namespace, while the test kills the process, cuts the
// network or drops packets. Every report the agent sends reaches a test
// API server, which records it: a report of success for a disk that does
// not hold the image is the failure these tests look for.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/rackboot/rackboot/agent"
	"github.com/rackboot/rackboot/agent/deploy"
	"github.com/rackboot/rackboot/agent/protocol"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/httpboot"
	"github.com/rackboot/rackboot/images/diskimage"
	"github.com/rackboot/rackboot/lab"
)

// The child process: the test binary run again with these set is an
// agent for one node whose only disk is faultDisk.
const (
	faultAPI   = "RACKBOOT_FAULT_AGENT_API"
	faultFiles = "RACKBOOT_FAULT_AGENT_FILES"
	faultDisk  = "RACKBOOT_FAULT_AGENT_DISK"
	// faultDiskTimeout is the agent's disk timeout (--disk-timeout).
	faultDiskTimeout = "RACKBOOT_FAULT_AGENT_DISK_TIMEOUT"
)

func TestMain(m *testing.M) {
	if os.Getenv(faultAPI) != "" {
		os.Exit(agentMain())
	}
	os.Exit(m.Run())
}

// agentMain runs the agent as rackboot-agent's run does (the same HTTP
// clients, the same task functions) until its first task is reported.
func agentMain() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	dev := os.Getenv(faultDisk)
	f, err := os.Open(dev)
	if err != nil {
		log.Error("open disk", "err", err)
		return 2
	}
	size, err := f.Seek(0, io.SeekEnd)
	f.Close()
	if err != nil {
		log.Error("size of disk", "err", err)
		return 2
	}
	var cl agent.Cmdline
	diskTimeout, _ := time.ParseDuration(os.Getenv(faultDiskTimeout))
	work := &agent.Work{Base: os.Getenv(faultFiles), HTTP: cl.Client(0), DiskTimeout: diskTimeout,
		Disks: func() ([]deploy.Disk, error) { return []deploy.Disk{{Name: dev, Size: size}}, nil }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := &agent.Agent{API: os.Getenv(faultAPI), NodeID: "n1", MACs: []string{"52:54:00:fa:01:01"}, Logger: log,
		HTTP: cl.Client(30 * time.Second), Tasks: work.Funcs(),
		After: func(protocol.Task, protocol.TaskReport) { cancel() }}
	work.Token = a.Token
	if err := a.Run(ctx); err != nil {
		log.Error("agent", "err", err)
		return 1
	}
	return 0
}

func sh(t *testing.T, prog string, args ...string) string {
	t.Helper()
	out, err := exec.Command(prog, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// image is a real bootable GPT image (diskimage, ESP + root) and its
// compressed forms.
type image struct {
	raw       []byte
	rawSHA256 string
	// files holds each format's served bytes, under dir.
	files map[string][]byte
	dir   string
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func buildImage(t *testing.T) *image {
	t.Helper()
	dir := t.TempDir()
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	// Random files, which no compressor shrinks, make the ESP hold 10
	// MiB of real work for the decompressor and the disk.
	out := filepath.Join(dir, "disk.raw")
	if err := diskimage.Build(diskimage.Options{Name: "faults", Arch: boot.ArchX86_64, Output: out, Size: 160 << 20,
		Loader: random(1 << 20), Kernel: random(6 << 20), Initrd: random(3 << 20)}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	im := &image{raw: raw, rawSHA256: sum(raw), files: map[string][]byte{}, dir: dir}
	var gz, zs bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	ze, _ := zstd.NewWriter(&zs)
	ze.Write(raw)
	ze.Close()
	im.files["raw.gz"], im.files["raw.zst"] = gz.Bytes(), zs.Bytes()
	for format, b := range im.files {
		if err := os.WriteFile(filepath.Join(dir, "image."+format), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return im
}

// apiServer is the agent's side of rackboot's API, reduced to what one
// task needs: it hands out the current task until the agent reports it,
// and records every report and every progress it hears.
type apiServer struct {
	mu       sync.Mutex
	task     *protocol.Task
	reports  []protocol.TaskReport
	progress protocol.Progress
	running  bool
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case strings.HasSuffix(r.URL.Path, protocol.LookupPath):
		json.NewEncoder(w).Encode(protocol.LookupResult{NodeID: "n1", Token: "tok", State: "deploying", Heartbeat: protocol.Duration(250 * time.Millisecond)})
	case strings.HasSuffix(r.URL.Path, "/heartbeat"):
		var hb protocol.Heartbeat
		json.NewDecoder(r.Body).Decode(&hb)
		res := protocol.HeartbeatResult{State: "deploying"}
		if hb.Running == "" && s.task != nil && len(s.reports) == 0 {
			res.Task = s.task
		}
		if hb.Running != "" {
			s.running = true
		}
		if hb.Progress != nil {
			s.progress = *hb.Progress
		}
		json.NewEncoder(w).Encode(res)
	case strings.Contains(r.URL.Path, "/tasks/"):
		var rep protocol.TaskReport
		if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.reports = append(s.reports, rep)
		w.Write([]byte(`{"state":"active"}`))
	default:
		http.NotFound(w, r)
	}
}

func (s *apiServer) reset(task protocol.Task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.task, s.reports, s.progress, s.running = &task, nil, protocol.Progress{}, false
}

func (s *apiServer) got() ([]protocol.TaskReport, protocol.Progress) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]protocol.TaskReport(nil), s.reports...), s.progress
}

// rig is one node's world: a loop device, a namespace holding the API
// and the image server, a veth pair between them.
type rig struct {
	t        *testing.T
	im       *image
	dev      string
	size     int64
	ns       string
	hostVeth string
	nsVeth   string
	api      *apiServer
	apiURL   string
	files    string
	buf      []byte
	// mnt, when set, is the ext4 filesystem that holds the backing
	// file, which freeze stops.
	mnt string
	// diskTimeout is the agent's.
	diskTimeout time.Duration
}

// newRig makes a node's world. With freezable, the loop device's backing
// file sits on an ext4 filesystem of its own (itself on a loop device in
// memory), so that freeze can make the disk stop answering.
func newRig(t *testing.T, im *image, freezable bool) *rig {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root for a loop device and a network namespace")
	}
	r := &rig{t: t, im: im, size: 256 << 20, api: &apiServer{}}
	// The loop device's backing file lives in memory: the disk under
	// test is the loop device, and a flush to a busy machine's real disk
	// would only slow every run.
	shm, err := os.MkdirTemp("/dev/shm", "rackboot-faults-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	dir := shm
	if freezable {
		fsImage := filepath.Join(shm, "fs.img")
		f, err := os.Create(fsImage)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(r.size + 64<<20)
		f.Close()
		sh(t, "mkfs.ext4", "-q", "-F", fsImage)
		r.mnt = filepath.Join(shm, "mnt")
		os.Mkdir(r.mnt, 0o700)
		sh(t, "mount", "-o", "loop", fsImage, r.mnt)
		t.Cleanup(func() { exec.Command("umount", r.mnt).Run() })
		dir = r.mnt
	}
	backing := filepath.Join(dir, "disk")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(r.size)
	f.Close()
	r.dev = sh(t, "losetup", "--find", "--show", backing)
	t.Cleanup(func() { exec.Command("losetup", "-d", r.dev).Run() })

	id := os.Getpid() % 10000
	r.ns = fmt.Sprintf("rbfault%d", id)
	r.hostVeth, r.nsVeth = fmt.Sprintf("rbf%da", id), fmt.Sprintf("rbf%db", id)
	host, peer := fmt.Sprintf("10.231.%d.1", id%250), fmt.Sprintf("10.231.%d.2", id%250)
	sh(t, "ip", "netns", "add", r.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", r.ns).Run() })
	sh(t, "ip", "link", "add", r.hostVeth, "type", "veth", "peer", "name", r.nsVeth)
	t.Cleanup(func() { exec.Command("ip", "link", "del", r.hostVeth).Run() })
	sh(t, "ip", "link", "set", r.nsVeth, "netns", r.ns)
	sh(t, "ip", "addr", "add", host+"/30", "dev", r.hostVeth)
	// One frame a packet, as on a wire: a veth otherwise passes 64 KiB
	// segments, and a dropped one would be 45 frames lost at once.
	sh(t, "ip", "link", "set", r.hostVeth, "gso_max_segs", "1")
	sh(t, "ip", "netns", "exec", r.ns, "ip", "link", "set", r.nsVeth, "gso_max_segs", "1")
	sh(t, "ip", "link", "set", r.hostVeth, "up")
	sh(t, "ip", "netns", "exec", r.ns, "ip", "addr", "add", peer+"/30", "dev", r.nsVeth)
	sh(t, "ip", "netns", "exec", r.ns, "ip", "link", "set", r.nsVeth, "up")
	sh(t, "ip", "netns", "exec", r.ns, "ip", "link", "set", "lo", "up")

	var apiLn, filesLn net.Listener
	if err := lab.InNamespace(r.ns, func() error {
		var err error
		if apiLn, err = net.Listen("tcp", peer+":0"); err != nil {
			return err
		}
		filesLn, err = net.Listen("tcp", peer+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	apiSrv := &http.Server{Handler: r.api}
	go apiSrv.Serve(apiLn)
	files := &httpboot.Server{Artifacts: im.dir}
	served := make(chan struct{})
	go func() { files.Serve(ctx, filesLn); close(served) }()
	t.Cleanup(func() { cancel(); apiSrv.Close(); <-served })
	r.apiURL = "http://" + apiLn.Addr().String() + "/api/v1"
	r.files = "http://" + filesLn.Addr().String()
	return r
}

// drop makes both ends of the veth pair drop pct% of the packets they
// receive (nftables' random numbers in an ingress hook of each device:
// this kernel has no netem), so each direction loses as on a bad link;
// 100 cuts the link, 0 mends it.
func (r *rig) drop(pct int) {
	r.t.Helper()
	for _, end := range []struct {
		pre []string
		dev string
	}{{nil, r.hostVeth}, {[]string{"ip", "netns", "exec", r.ns}, r.nsVeth}} {
		table := "rbfault_" + end.dev
		del := append(append([]string(nil), end.pre...), "nft", "delete", "table", "netdev", table)
		exec.Command(del[0], del[1:]...).Run() // none there is fine
		if pct == 0 {
			continue
		}
		rule := "counter drop"
		if pct < 100 {
			rule = fmt.Sprintf("numgen random mod 100 < %d counter drop", pct)
		}
		script := fmt.Sprintf("table netdev %s {\n chain in {\n  type filter hook ingress device %q priority 0;\n  %s\n }\n}\n", table, end.dev, rule)
		cmd := append(append([]string(nil), end.pre...), "nft", "-f", "-")
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Stdin = strings.NewReader(script)
		if out, err := c.CombinedOutput(); err != nil {
			r.t.Fatalf("nft %s: %v\n%s", script, err, out)
		}
		if end.pre == nil {
			r.t.Cleanup(func() { exec.Command(del[0], del[1:]...).Run() })
		}
	}
}

// dropped is how many packets the drop rules have dropped, both ends.
func (r *rig) dropped() int {
	r.t.Helper()
	n := 0
	for _, end := range []struct {
		pre []string
		dev string
	}{{nil, r.hostVeth}, {[]string{"ip", "netns", "exec", r.ns}, r.nsVeth}} {
		cmd := append(append([]string(nil), end.pre...), "nft", "list", "table", "netdev", "rbfault_"+end.dev)
		out := sh(r.t, cmd[0], cmd[1:]...)
		_, after, ok := strings.Cut(out, "counter packets ")
		if !ok {
			r.t.Fatalf("no counter in %s", out)
		}
		k, _ := strconv.Atoi(strings.Fields(after)[0])
		n += k
	}
	return n
}

// rate limits what the servers send to the agent (a token bucket on the
// namespace's end); "" lifts the limit.
func (r *rig) rate(rate string) {
	r.t.Helper()
	if rate == "" {
		exec.Command("ip", "netns", "exec", r.ns, "tc", "qdisc", "del", "dev", r.nsVeth, "root").Run()
		return
	}
	sh(r.t, "ip", "netns", "exec", r.ns, "tc", "qdisc", "replace", "dev", r.nsVeth, "root", "tbf", "rate", rate, "burst", "64kb", "latency", "400ms")
}

func (r *rig) deployTask(format string) protocol.Task {
	p, _ := json.Marshal(map[string]any{"image": "faults", "path": "/artifacts/image." + format, "format": format,
		"sha256": sum(r.im.files[format]), "raw_sha256": r.im.rawSHA256, "raw_size": len(r.im.raw),
		// A loop device is smaller than the 4 GiB a disk chosen without
		// hints must have.
		"root_device": map[string]string{"name": r.dev}})
	return protocol.Task{ID: "deploy-" + format, Kind: protocol.TaskDeploy, Params: p}
}

func (r *rig) wipeTask(method string) protocol.Task {
	return protocol.Task{ID: "wipe-" + method, Kind: protocol.TaskWipe, Params: json.RawMessage(`{"method":"` + method + `"}`)}
}

// child is one agent process.
type child struct {
	cmd     *exec.Cmd
	start   time.Time
	exited  chan struct{}
	ended   chan struct{} // the agent logged the task's end: its report is next
	mu      sync.Mutex
	log     bytes.Buffer
	runtime time.Duration
	endedAt time.Time // when ended closed
}

func (r *rig) startAgent(task protocol.Task) *child {
	r.t.Helper()
	r.api.reset(task)
	exe, err := os.Executable()
	if err != nil {
		r.t.Fatal(err)
	}
	c := &child{cmd: exec.Command(exe, "-test.run=^$"), exited: make(chan struct{}), ended: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), faultAPI+"="+r.apiURL, faultFiles+"="+r.files, faultDisk+"="+r.dev)
	if r.diskTimeout > 0 {
		c.cmd.Env = append(c.cmd.Env, faultDiskTimeout+"="+r.diskTimeout.String())
	}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	c.start = time.Now()
	if err := c.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(c.kill)
	go func() {
		sc := bufio.NewScanner(stderr)
		var once sync.Once
		for sc.Scan() {
			c.mu.Lock()
			c.log.Write(append(sc.Bytes(), '\n'))
			c.mu.Unlock()
			if strings.Contains(sc.Text(), `msg="task ended"`) {
				once.Do(func() { c.endedAt = time.Now(); close(c.ended) })
			}
		}
		c.cmd.Wait()
		c.runtime = time.Since(c.start)
		close(c.exited)
	}()
	return c
}

func (c *child) kill() {
	select {
	case <-c.exited:
	default:
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
	}
}

func (c *child) logText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

// wait waits for the child to end on its own, at most d.
func (c *child) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(d):
		c.kill()
		t.Fatalf("the agent did not end within %s:\n%s", d, c.logText())
	}
}

// ioCounts are the child's read and write byte counts (/proc/PID/io):
// where it was in its task when it was killed.
func ioCounts(pid int) (rchar, wchar int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1, -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "rchar":
			rchar = n
		case "wchar":
			wchar = n
		}
	}
	return rchar, wchar
}

// diskState is what the disk holds.
type diskState struct {
	// tables: a disk firmware would take for partitioned, from its
	// first sectors (an MBR signature or a primary GPT) or its last (a
	// backup GPT).
	tables bool
	// content: every byte of the image between its first and last MiB
	// (the partition tables, which the agent rewrites after the image:
	// the backup moves to the disk's end) is on the disk.
	content bool
	// old: the disk holds the image the deploy replaces (from
	// putOld), whole.
	old bool
	// zero: the disk holds no byte but zero.
	zero bool
	// endsZero: its first and last MiB are zero.
	endsZero bool
	// startsZero: the first 64 KiB of each of the image's partitions
	// (the ESP's FAT boot sector, the root's ext4 superblock) are zero.
	startsZero bool
}

// partitionStarts are where diskimage puts the ESP and the root.
var partitionStarts = []int64{1 << 20, 1<<20 + 96<<20}

func (r *rig) state() diskState {
	r.t.Helper()
	// One buffer for every look: a fresh 256 MiB each time is most of
	// the cost of looking.
	if r.buf == nil {
		r.buf = make([]byte, r.size)
	}
	b := r.buf
	f, err := os.Open(r.dev)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(b, 0); err != nil {
		r.t.Fatal(err)
	}
	const mib = 1 << 20
	n := int64(len(r.im.raw))
	s := diskState{
		content:  bytes.Equal(b[mib:n-mib], r.im.raw[mib:n-mib]),
		tables:   (b[510] == 0x55 && b[511] == 0xaa) || string(b[512:520]) == "EFI PART" || string(b[len(b)-512:len(b)-504]) == "EFI PART",
		old:      r.isOld(b),
		endsZero: allZero(b[:mib]) && allZero(b[len(b)-mib:]),
	}
	s.startsZero = true
	for _, off := range partitionStarts {
		s.startsZero = s.startsZero && allZero(b[off:off+64<<10])
	}
	// The whole disk only when its ends and starts are: a pass over
	// it costs, and a deployed disk fails at its first byte.
	s.zero = s.endsZero && s.startsZero && allZero(b)
	return s
}

// oldSectors are where the image the disk held before differs from the
// one deployed: one sector in every 4 MiB block, so a disk written up
// to any block holds neither image whole.
func (r *rig) oldSectors() []int64 {
	var offs []int64
	for off := int64(1<<20 + 4096); off+4096 <= int64(len(r.im.raw))-1<<20; off += deploy.BlockSize {
		offs = append(offs, off)
	}
	return offs
}

// putOld turns the image on the disk into the older one: the same
// partition tables, other bytes in each block.
func (r *rig) putOld() {
	r.t.Helper()
	f, err := os.OpenFile(r.dev, os.O_RDWR, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	for _, off := range r.oldSectors() {
		b := bytes.Clone(r.im.raw[off : off+4096])
		for i := range b {
			b[i] ^= 0x5a
		}
		if _, err := f.WriteAt(b, off); err != nil {
			r.t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		r.t.Fatal(err)
	}
}

// isOld says whether disk b holds the older image between the tables.
func (r *rig) isOld(b []byte) bool {
	n := int64(len(r.im.raw))
	at := int64(1 << 20)
	for _, off := range r.oldSectors() {
		if !bytes.Equal(b[at:off], r.im.raw[at:off]) {
			return false
		}
		for i := off; i < off+4096; i++ {
			if b[i] != r.im.raw[i]^0x5a {
				return false
			}
		}
		at = off + 4096
	}
	return bytes.Equal(b[at:n-1<<20], r.im.raw[at:n-1<<20])
}

// deployResult is a deploy report's result.
type deployResult struct {
	Verified  bool   `json:"verified"`
	RawSHA256 string `json:"raw_sha256"`
	Resumes   int    `json:"resumes"`
	Seconds   float64
}

// checkReports fails on a report of success for a disk that does not
// hold the image, and on a report that is neither done nor failed.
func (r *rig) checkReports(reps []protocol.TaskReport, st diskState, what string) {
	r.t.Helper()
	for _, rep := range reps {
		switch rep.State {
		case protocol.Done:
			var res deployResult
			json.Unmarshal(rep.Result, &res)
			if !res.Verified || res.RawSHA256 != r.im.rawSHA256 || !st.content || !st.tables {
				r.t.Errorf("%s: FALSE SUCCESS: reported done (%s) for a disk that holds the image: %v, has tables: %v", what, rep.Result, st.content, st.tables)
			}
		case protocol.Failed:
			if rep.Error == "" {
				r.t.Errorf("%s: a failure without a reason", what)
			}
		default:
			r.t.Errorf("%s: report state %q", what, rep.State)
		}
	}
	if st.tables && !st.content && !st.old {
		r.t.Errorf("%s: HALF-WRITTEN DISK LOOKS PARTITIONED: its tables are there, neither the new image nor the old one is whole", what)
	}
}

// deploy runs one deploy to its end and checks it succeeded.
func (r *rig) deploy(format string, limit time.Duration) (time.Duration, deployResult) {
	r.t.Helper()
	c := r.startAgent(r.deployTask(format))
	c.wait(r.t, limit)
	reps, _ := r.api.got()
	st := r.state()
	r.checkReports(reps, st, "deploy "+format)
	if len(reps) != 1 || reps[0].State != protocol.Done {
		r.t.Fatalf("deploy %s: reports %+v\n%s", format, reps, c.logText())
	}
	var res deployResult
	json.Unmarshal(reps[0].Result, &res)
	return c.runtime, res
}

var soak = os.Getenv("RACKBOOT_SOAK") != ""

// TestAgentFaults runs rackboot's deploy and wipe tasks in an agent
// process of their own against a loop device, with the image served from
// another network namespace, through kills, a network cut and packet
// loss. The parts share one image and one rig: building the image is
// the slow part of setting up.
func TestAgentFaults(t *testing.T) {
	build := time.Now()
	im := buildImage(t)
	t.Logf("image built in %s", time.Since(build).Round(time.Millisecond))
	for _, tc := range []struct {
		name string
		f    func(*testing.T, *rig)
	}{{"kills", testKills}, {"cut", testNetworkCut}, {"loss", testPacketLoss}, {"wedged", testWedgedDisk}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f(t, newRig(t, im, tc.name == "wedged"))
		})
	}
}

// freeze stops the filesystem under the backing file (fsfreeze): every
// write the loop device passes on then waits in the kernel, as I/O to a
// disk that stopped answering does. thaw lets it go on.
func (r *rig) freeze() { sh(r.t, "fsfreeze", "--freeze", r.mnt) }

func (r *rig) thaw() { exec.Command("fsfreeze", "--unfreeze", r.mnt).Run() }

// testWedgedDisk makes the disk stop answering in the middle of a deploy:
// the agent must report the task failed, saying so, within its disk
// timeout of the stuck operation, though the goroutine doing the I/O
// stays in the kernel (uninterruptible: not even SIGKILL ends the
// process then). Once the disk answers again the process ends.
func testWedgedDisk(t *testing.T, r *rig) {
	r.diskTimeout = 3 * time.Second
	// A slow link, so the write lasts long enough to be stopped.
	defer r.rate("")
	r.rate("20mbit")
	c := r.startAgent(r.deployTask("raw.zst"))
	// Thawed before the child is killed at the end: a process with a
	// thread stuck in the kernel does not die until its I/O ends.
	t.Cleanup(r.thaw)
	var wchar int64
	for {
		if _, wchar = ioCounts(c.cmd.Process.Pid); wchar >= 16<<20 {
			break
		}
		select {
		case <-c.exited:
			t.Fatalf("the deploy ended before the disk could stop:\n%s", c.logText())
		case <-time.After(20 * time.Millisecond):
		}
	}
	r.freeze()
	frozen := time.Now()
	var reps []protocol.TaskReport
	for {
		if reps, _ = r.api.got(); len(reps) > 0 {
			break
		}
		if time.Since(frozen) > 2*time.Minute {
			r.thaw()
			t.Fatalf("no report 2 minutes after the disk stopped answering (disk timeout %s):\n%s", r.diskTimeout, c.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
	reported := time.Since(frozen)
	stuck := false
	select {
	case <-c.exited:
	default:
		stuck = true // its writer is still in the kernel
	}
	r.thaw()
	thawed := time.Now()
	c.wait(t, time.Minute)
	if len(reps) != 1 || reps[0].State != protocol.Failed || !strings.Contains(reps[0].Error, deploy.ErrWedged.Error()) {
		t.Fatalf("reports %+v: want one, the deploy failed because %q:\n%s", reps, deploy.ErrWedged, c.logText())
	}
	t.Logf("the disk stopped answering with %d MiB written: reported failed %.1f s later (disk timeout %s), the agent's process %s; it ended %.1f s after the thaw: %q",
		wchar>>20, reported.Seconds(), r.diskTimeout, map[bool]string{true: "still stuck in the kernel", false: "already gone"}[stuck],
		c.runtime.Seconds()-thawed.Sub(c.start).Seconds(), reps[0].Error)
}

// testKills kills the agent with SIGKILL at points spread
// over a deploy (fetch, write, flush, verification, relocation of the
// backup table, the report), then runs the same task again on the same
// disk. After each kill no report of success names a disk that does not
// hold the image, the disk either holds the image or has no partition
// table, and the rerun ends verified.
func testKills(t *testing.T, r *rig) {
	im := r.im
	perFormat := 25
	if soak {
		perFormat = 200
	}
	if s := os.Getenv("RACKBOOT_FAULT_KILLS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		perFormat = n
	}
	phases := map[string]int{}
	var order []string
	count := func(p string) {
		if phases[p] == 0 {
			order = append(order, p)
		}
		phases[p]++
	}
	start := time.Now()
	for _, format := range []string{"raw.zst", "raw.gz"} {
		base, _ := r.deploy(format, 2*time.Minute)
		t.Logf("%s: an uninterrupted deploy took %s (%d bytes served, %d raw)", format, base.Round(time.Millisecond), len(im.files[format]), len(im.raw))
		z := int64(len(im.files[format]))
		raw := int64(len(im.raw))
		for i := 0; i < perFormat+2; i++ {
			r.putOld()
			if i == 0 {
				if st := r.state(); !st.old || !st.tables {
					t.Fatalf("the older image is not on the disk: %+v", st)
				}
			}
			c := r.startAgent(r.deployTask(format))
			what := fmt.Sprintf("%s kill %d", format, i)
			if i < perFormat {
				// Spread over the whole run, with a little past its
				// end for a slow one.
				at := time.Duration(float64(base) * 1.05 * (float64(i) + 0.5) / float64(perFormat))
				select {
				case <-c.exited:
				case <-time.After(time.Until(c.start.Add(at))):
				}
			} else {
				// The task has ended; its report is being sent.
				select {
				case <-c.exited:
				case <-c.ended:
				}
			}
			rchar, wchar := ioCounts(c.cmd.Process.Pid)
			select {
			case <-c.exited:
				count("ended before the kill")
			default:
				c.kill()
				// The writes' counts tell where the kill landed: the
				// image (raw bytes, less what a kill lost in flight),
				// then the verification's reads on top of the download's.
				switch {
				case wchar < 3<<20:
					count("fetch, before the first write")
				case wchar < raw+2<<20:
					count("writing")
				case rchar < z+1<<20:
					count("flush")
				case rchar < z+raw:
					count("verification")
				default:
					count("after verification: backup table, report")
				}
			}
			reps, _ := r.api.got()
			r.checkReports(reps, r.state(), what)
			if t.Failed() {
				t.Fatalf("%s (rchar %d, wchar %d): %s", what, rchar, wchar, c.logText())
			}
			took, res := r.deploy(format, 2*time.Minute)
			// The kills aim at the machine's pace now: the next
			// points spread over the run just seen.
			base = took
			if !res.Verified {
				t.Fatalf("%s: the rerun did not verify: %+v", what, res)
			}
		}
	}
	var parts []string
	for _, p := range order {
		parts = append(parts, fmt.Sprintf("%s %d", p, phases[p]))
	}
	t.Logf("%d kills, each followed by a verified rerun, in %s: %s", 2*(perFormat+2), time.Since(start).Round(time.Second), strings.Join(parts, ", "))
}

// testNetworkCut drops every packet between the agent and the
// servers for RACKBOOT_FAULT_CUT (default 20 s) while the image is being
// downloaded: the deploy resumes and ends verified, or fails with its
// reason, and the agent ends either way.
func testNetworkCut(t *testing.T, r *rig) {
	cut := 20 * time.Second
	if s := os.Getenv("RACKBOOT_FAULT_CUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		cut = d
	}
	im := r.im
	defer r.rate("")
	defer r.drop(0)
	// A slow link, so the download lasts long enough to be cut.
	r.rate("40mbit")
	c := r.startAgent(r.deployTask("raw.zst"))
	z := int64(len(im.files["raw.zst"]))
	var rchar int64
	for {
		if rchar, _ = ioCounts(c.cmd.Process.Pid); rchar >= z/3 {
			break
		}
		select {
		case <-c.exited:
			t.Fatalf("the deploy ended before the cut:\n%s", c.logText())
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.drop(100)
	cutAt := time.Now()
	time.Sleep(cut)
	r.drop(0)
	back := time.Now()
	// Bounded: the stall timeout (a minute) gives up the connection,
	// then eight tries to resume with their dial timeouts and backoff.
	c.wait(t, cut+15*time.Minute)
	reps, _ := r.api.got()
	st := r.state()
	r.checkReports(reps, st, "network cut")
	if len(reps) != 1 {
		t.Fatalf("reports %+v:\n%s", reps, c.logText())
	}
	var res deployResult
	json.Unmarshal(reps[0].Result, &res)
	ended := time.Since(back)
	t.Logf("cut for %s with %d of %d bytes downloaded (%.1f s into the deploy): the task ended %s into the cut, its report came %s after the network came back; the whole deploy %s; report %s, resumes %d, error %q",
		cut, rchar, z, cutAt.Sub(c.start).Seconds(), c.endedAt.Sub(cutAt).Round(100*time.Millisecond), ended.Round(100*time.Millisecond), c.runtime.Round(100*time.Millisecond), reps[0].State, res.Resumes, reps[0].Error)
	if reps[0].State == protocol.Done && !res.Verified {
		t.Errorf("done but not verified: %s", reps[0].Result)
	}
}

// wipeRecord is one disk of a wipe report's result.
type wipeRecord struct {
	Method string `json:"method"`
	Bytes  int64  `json:"bytes"`
}

// testPacketLoss runs a deploy and a quick and a full wipe with no loss
// and with 5% of the packets dropped each way: each ends verified, and
// each wipe's report is true of the disk.
func testPacketLoss(t *testing.T, r *rig) {
	defer r.drop(0)
	for _, loss := range []int{0, 5} {
		r.drop(loss)
		seen := 0
		lost := func() int {
			if loss == 0 {
				return 0
			}
			n := r.dropped()
			n, seen = n-seen, n
			return n
		}
		for _, method := range []string{"quick", "full"} {
			took, res := r.deploy("raw.zst", 5*time.Minute)
			t.Logf("loss %d%%: deploy %s, resumes %d, %d packets dropped", loss, took.Round(10*time.Millisecond), res.Resumes, lost())
			c := r.startAgent(r.wipeTask(method))
			c.wait(t, 5*time.Minute)
			reps, _ := r.api.got()
			if len(reps) != 1 || reps[0].State != protocol.Done {
				t.Fatalf("loss %d%%: wipe %s: reports %+v\n%s", loss, method, reps, c.logText())
			}
			var out struct{ Disks []wipeRecord }
			json.Unmarshal(reps[0].Result, &out)
			if len(out.Disks) != 1 {
				t.Fatalf("loss %d%%: wipe %s: the report names %d disks: %s", loss, method, len(out.Disks), reps[0].Result)
			}
			st := r.state()
			switch {
			case st.tables:
				t.Errorf("loss %d%%: wipe %s reported done (%s), the disk still has partition tables", loss, method, reps[0].Result)
			case !st.endsZero:
				t.Errorf("loss %d%%: wipe %s reported done (%s), the disk's first or last MiB holds data", loss, method, reps[0].Result)
			case !st.startsZero:
				t.Errorf("loss %d%%: wipe %s reported done (%s), a partition's filesystem signature survived", loss, method, reps[0].Result)
			case method == "full" && !st.zero:
				t.Errorf("loss %d%%: full wipe reported done (%s), the disk still holds data", loss, reps[0].Result)
			}
			t.Logf("loss %d%%: wipe %s (%s) %s, %d packets dropped", loss, method, out.Disks[0].Method, c.runtime.Round(10*time.Millisecond), lost())
		}
	}
}

func allZero(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }
