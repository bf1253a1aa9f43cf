package upgradetest

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/lease"
	"github.com/rackboot/rackboot/store"
)

var update = flag.Bool("update", false, "rewrite the fixtures in testdata with this release's store")

// The fixture's clock: every time written is one of these, so the golden
// files are stable.
var (
	t0 = time.Date(2026, 11, 2, 10, 0, 0, 123456789, time.UTC)
	// far is when the fixture's leases expire: still live when the test runs.
	far = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

var (
	mac1 = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x01}
	mac2 = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x02}
	mac3 = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x03}
	// mac4 has a lease and no node: a client that never PXE-booted.
	mac4 = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x04}

	subnetA = netip.MustParsePrefix("10.20.0.0/24")
	subnetB = netip.MustParsePrefix("10.21.0.0/24")
	// declined is an address a client declined.
	declined = netip.MustParseAddr("10.20.0.99")

	tokenHashes = []string{
		"a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
		"b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2",
		"c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
	}
)

func at(d time.Duration) time.Time { return t0.Add(d) }

// get returns v, failing t on err: get(s.Node(ctx, id))(t).
func get[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func get2[A, B any](a A, b B, err error) func(*testing.T) (A, B) {
	return func(t *testing.T) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}

func ck(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }

// fill writes the fixture's state through the store's own methods: three
// nodes in three states, their trace, events, tasks, images, users,
// tokens of every kind, and leases offered, bound and declined.
func fill(t *testing.T, s store.Store) {
	ctx := context.Background()
	n1, _ := get2(s.EnrollClient(ctx, boot.Client{MAC: mac1, Arch: boot.ClientX64UEFI,
		UUID: []byte{0x4c, 0x4c, 0x45, 0x44, 0, 0x4b, 0x10, 0x31, 0x80, 0x35, 0xb2, 0xc0, 0x4f, 0x33, 0x37, 0x32}}, t0))(t)
	n2, _ := get2(s.EnrollClient(ctx, boot.Client{MAC: mac2, Arch: boot.ClientARM64UEFI}, at(time.Second)))(t)
	n3, _ := get2(s.EnrollClient(ctx, boot.Client{MAC: mac3, Arch: boot.ClientX86BIOS}, at(2*time.Second)))(t)
	get(s.UpdateNode(ctx, n1.ID, store.NodePatch{Name: ptr("gpu-01"), Rack: ptr("r12"), Position: ptr(7),
		Tags: ptr([]string{"gpu", "a100"}), Owner: ptr("rackboot")}))(t)
	get(s.UpdateNode(ctx, n2.ID, store.NodePatch{Name: ptr("arm-01"), Rack: ptr("r13"), Position: ptr(40),
		Tags: ptr([]string{"arm"}), Owner: ptr("ironic")}))(t)
	ck(t, s.SetSecureBoot(ctx, n1.ID, ptr(true)))
	ck(t, s.SetSecureBoot(ctx, n3.ID, ptr(false)))
	inv := json.RawMessage(`{"version":1,"cpu":{"arch":"x86_64","model":"AMD EPYC 7763","sockets":2},"gpus":[{"model":"NVIDIA A100-SXM4-80GB","numa_node":1}]}`)
	ck(t, s.SetInventory(ctx, n1.ID, inv, []string{"NVIDIA A100-SXM4-80GB"}))
	ck(t, s.SetInventory(ctx, n2.ID, json.RawMessage(`{"version":1,"cpu":{"arch":"aarch64"}}`), nil))
	ck(t, s.TouchNode(ctx, n2.ID, at(time.Minute)))
	for i, step := range []struct {
		id       string
		from, to store.State
		lastErr  string
	}{
		{n1.ID, store.StateDiscovered, store.StateInspecting, ""},
		{n1.ID, store.StateInspecting, store.StateAvailable, ""},
		{n2.ID, store.StateDiscovered, store.StateInspecting, ""},
		{n2.ID, store.StateInspecting, store.StateFailed, "no disk found"},
	} {
		_, _ = get2(s.Transition(ctx, step.id, step.from, step.to, step.lastErr,
			store.Event{Time: at(time.Duration(10+i) * time.Minute), Actor: "user:admin", Reason: "fixture step"}))(t)
	}
	_ = get(s.AddEvent(ctx, store.Event{Time: at(20 * time.Minute), Actor: "system", Kind: "audit", Message: "token created"}))(t)
	_ = get(s.AddEvent(ctx, store.Event{Time: at(21 * time.Minute), NodeID: n3.ID, Actor: "token:x", Kind: "action", Reason: "power on", Message: "ipmi"}))(t)

	ck(t, s.AddTrace(ctx, n1.ID, boot.Event{Time: at(3 * time.Second), MAC: mac1, Proto: "dhcp", Kind: "discover",
		File: "snponly.efi", Size: -1, Options: map[string]string{"93": "7", "60": "PXEClient:Arch:00007:UNDI:003016"}}))
	ck(t, s.AddTrace(ctx, n1.ID, boot.Event{Time: at(4 * time.Second), MAC: mac1, IP: netip.MustParseAddr("10.20.0.10"),
		Proto: "tftp", Kind: "file", File: "snponly.efi", Bytes: 1 << 20, Size: 1 << 20, BlockSize: 1468, WindowSize: 16, Complete: true}))
	ck(t, s.AddTrace(ctx, n2.ID, boot.Event{Time: at(5 * time.Second), IP: netip.MustParseAddr("10.21.0.20"),
		Proto: "http", Kind: "file", File: "/boot/arm64/initrd", Bytes: 4096, Size: 1 << 24, Error: "connection reset"}))

	done := get(s.CreateTask(ctx, store.Task{NodeID: n1.ID, Kind: "inspect", Params: json.RawMessage(`{"burnin":false}`), Created: at(11 * time.Minute)}))(t)
	_ = get(s.ClaimTask(ctx, n1.ID, at(12*time.Minute)))(t)
	ck(t, s.TaskProgress(ctx, done.ID, json.RawMessage(`{"percent":50}`), at(13*time.Minute)))
	done.State, done.Result, done.Updated = store.TaskDone, json.RawMessage(`{"disks":2}`), at(14*time.Minute)
	ck(t, s.UpdateTask(ctx, done))
	_ = get(s.CreateTask(ctx, store.Task{NodeID: n2.ID, Kind: "wipe", Created: at(15 * time.Minute)}))(t)
	failed := get(s.CreateTask(ctx, store.Task{NodeID: n2.ID, Kind: "burnin", Params: json.RawMessage(`{"hours":4}`), Created: at(16 * time.Minute)}))(t)
	failed.State, failed.Error, failed.Updated = store.TaskFailed, "memory error on DIMM B2", at(17*time.Minute)
	ck(t, s.UpdateTask(ctx, failed))

	ck(t, s.CreateImage(ctx, store.Image{Name: "debian-13-amd64", Arch: boot.ArchX86_64, Format: "raw.zst", Size: 512 << 20,
		SHA256: "1f2e", RawSize: 4 << 30, RawSHA256: "3d4c", Source: "https://images.example/debian-13.qcow2", Created: at(30 * time.Minute)}))
	ck(t, s.CreateImage(ctx, store.Image{Name: "ubuntu-arm", Arch: boot.ArchAArch64, Format: "raw", Size: 2 << 30,
		SHA256: "5b6a", Source: "upload:ubuntu.img", Created: at(31 * time.Minute)}))

	ck(t, s.CreateUser(ctx, store.User{Name: "admin", Role: store.RoleAdmin, PasswordHash: "$2a$10$abcdefghijklmnopqrstuv", Created: at(time.Hour)}))
	ck(t, s.PutUser(ctx, store.User{Name: "tech1", Role: store.RoleTech, PasswordHash: "$2a$10$zyxwvutsrqponmlkjihgfe", Created: at(time.Hour + time.Second)}))
	get(s.CreateToken(ctx, store.Token{ID: "tok-api", Hash: tokenHashes[0], Kind: "api", Name: "ci", Role: store.RoleReadonly,
		User: "admin", Created: at(2 * time.Hour)}))(t)
	get(s.CreateToken(ctx, store.Token{ID: "tok-session", Hash: tokenHashes[1], Kind: "session", Role: store.RoleTech,
		User: "tech1", Created: at(2 * time.Hour), Expires: far}))(t)
	get(s.CreateToken(ctx, store.Token{ID: "tok-agent", Hash: tokenHashes[2], Kind: "agent", Role: store.RoleAgent,
		NodeID: n1.ID, NodeState: store.StateAvailable, Created: at(3 * time.Hour)}))(t)

	first, last := netip.MustParseAddr("10.20.0.10"), netip.MustParseAddr("10.20.0.200")
	l1 := get(s.Allocate(ctx, subnetA, first, last, mac1, netip.Addr{}, nil, far))(t)
	_ = get(s.Bind(ctx, subnetA, mac1, l1.IP, "gpu-01", far))(t)
	_ = get(s.Allocate(ctx, subnetA, first, last, mac3, netip.Addr{}, nil, far))(t)
	_ = get(s.Bind(ctx, subnetB, mac2, netip.MustParseAddr("10.21.0.20"), "arm-01", far))(t)
	_ = get(s.Allocate(ctx, subnetA, first, last, mac4, netip.MustParseAddr("10.20.0.150"), nil, far))(t)
	ck(t, s.Decline(ctx, declined, far))
}

// shownLease is a lease as the golden file shows it.
type shownLease struct {
	MAC, IP, Subnet, State string
	Expires                time.Time
	Hostname               string
}

// snapshot is everything the fixture's store reads back.
type snapshot struct {
	Nodes       []store.Node
	Counts      map[store.State]int
	GPUNodes    []string // ids ListNodes finds for the GPU filter
	TagNodes    []string // and for the tag filter
	Traces      map[string][]store.TraceEvent
	Events      []store.Event
	Tasks       []store.Task
	Images      []store.Image
	Users       []store.User
	Tokens      []store.Token // every token, by hash
	APITokens   []store.Token
	LeasesByMAC map[string]shownLease // "subnet mac"
	LeasesByIP  map[string]shownLease
}

func read(t *testing.T, s store.Store) snapshot {
	ctx := context.Background()
	var sn snapshot
	sn.Nodes = get(s.Nodes(ctx))(t)
	sn.Counts = get(s.CountNodes(ctx))(t)
	ids := func(f store.NodeFilter) []string {
		var out []string
		for _, n := range get(s.ListNodes(ctx, f))(t) {
			out = append(out, n.ID)
		}
		return out
	}
	sn.GPUNodes = ids(store.NodeFilter{GPU: "a100"})
	sn.TagNodes = ids(store.NodeFilter{Tag: "arm"})
	sn.Traces = map[string][]store.TraceEvent{}
	for _, n := range sn.Nodes {
		sn.Traces[n.ID] = get(s.Trace(ctx, n.ID, 0))(t)
	}
	sn.Events = get(s.Events(ctx, store.EventFilter{}))(t)
	sn.Tasks = get(s.Tasks(ctx, store.TaskFilter{}))(t)
	sn.Images = get(s.Images(ctx))(t)
	sn.Users = get(s.Users(ctx))(t)
	for _, h := range tokenHashes {
		sn.Tokens = append(sn.Tokens, get(s.TokenByHash(ctx, h))(t))
	}
	sn.APITokens = get(s.Tokens(ctx))(t)
	show := func(l lease.Lease) shownLease {
		return shownLease{MAC: l.MAC.String(), IP: l.IP.String(), Subnet: l.Subnet.String(), State: string(l.State), Expires: l.Expires, Hostname: l.Hostname}
	}
	sn.LeasesByMAC = map[string]shownLease{}
	for _, k := range []struct {
		sub netip.Prefix
		mac net.HardwareAddr
	}{{subnetA, mac1}, {subnetA, mac3}, {subnetA, mac4}, {subnetB, mac2}} {
		sn.LeasesByMAC[k.sub.String()+" "+k.mac.String()] = show(get(s.ByMAC(ctx, k.sub, k.mac))(t))
	}
	sn.LeasesByIP = map[string]shownLease{}
	for _, l := range sn.LeasesByMAC {
		sn.LeasesByIP[l.IP] = show(get(s.ByIP(ctx, netip.MustParseAddr(l.IP)))(t))
	}
	sn.LeasesByIP[declined.String()] = show(get(s.ByIP(ctx, declined))(t))
	return sn
}

func marshal(t *testing.T, sn snapshot) []byte {
	b, err := json.MarshalIndent(sn, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// writeGolden writes what s reads back as testdata/NAME.json.
func writeGolden(t *testing.T, s store.Store, name string) {
	if err := os.WriteFile(filepath.Join("testdata", name+".json"), marshal(t, read(t, s)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkUpgraded compares what s, opened on the fixture NAME, reads back
// with the golden file, then checks that it goes on from there: new
// events number after the old, and allocation steers clear of the
// fixture's leases.
func checkUpgraded(t *testing.T, s store.Store, name string) {
	ctx := context.Background()
	want, err := os.ReadFile(filepath.Join("testdata", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	got := read(t, s)
	var wantSn snapshot
	if err := json.Unmarshal(want, &wantSn); err != nil {
		t.Fatal(err)
	}
	// Compare as JSON, which is how the golden file was written.
	if d := cmp.Diff(string(want), string(marshal(t, got))); d != "" {
		t.Fatalf("the upgraded store reads back otherwise (-fixture +now):\n%s", d)
	}
	if !bytes.Contains(want, []byte("gpu-01")) || len(wantSn.Nodes) != 3 || len(wantSn.Events) != 6 {
		t.Fatalf("golden file %s.json lacks the fixture's data", name)
	}
	e := get(s.AddEvent(ctx, store.Event{Actor: "system", Kind: "audit", Message: "after upgrade"}))(t)
	if last := wantSn.Events[len(wantSn.Events)-1].Seq; e.Seq <= last {
		t.Errorf("new event numbered %d, not after the fixture's last (%d)", e.Seq, last)
	}
	taken := map[string]bool{}
	for ip := range wantSn.LeasesByIP {
		taken[ip] = true
	}
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0xbb, 0x00, 0x01}
	for _, want := range []string{"10.20.0.10", "10.20.0.150", declined.String()} {
		l := get(s.Allocate(ctx, subnetA, netip.MustParseAddr("10.20.0.10"), netip.MustParseAddr("10.20.0.200"), mac,
			netip.MustParseAddr(want), nil, time.Now().Add(time.Minute)))(t)
		if taken[l.IP.String()] {
			t.Errorf("allocation asking for %s got %s, a fixture lease", want, l.IP)
		}
		ck(t, s.Release(ctx, mac, l.IP))
	}
	if n, created, err := s.EnrollClient(ctx, boot.Client{MAC: mac1, Arch: boot.ClientX64UEFI}, time.Now()); err != nil || created || n.Name != "gpu-01" {
		t.Errorf("enroll %s after upgrade: node %q, created %v, %v; want gpu-01 found", mac1, n.Name, created, err)
	}
	// A database from before BMCs has none, and takes one for an old node.
	if bs, err := s.BMCs(ctx); err != nil || len(bs) != 0 {
		t.Errorf("BMCs after upgrade: %v, %v; want none", bs, err)
	}
	n1 := get(s.Node(ctx, "gpu-01"))(t)
	ck(t, s.SetBMC(ctx, store.BMC{NodeID: n1.ID, URL: "ipmi://10.0.0.1", User: "admin", Password: []byte("sealed")}))
	if b, err := s.BMC(ctx, n1.ID); err != nil || b.URL != "ipmi://10.0.0.1" {
		t.Errorf("BMC set after upgrade reads back %+v, %v", b, err)
	}
}
