//go:build integration

package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/hypervisor/virttest"
	"github.com/rackboot/rackboot/internal/sealbox"
	"github.com/rackboot/rackboot/power/powertest"
	"github.com/rackboot/rackboot/store"
	"github.com/rackboot/rackboot/store/sqlite"
	"github.com/rackboot/rackboot/web"
)

const chromiumPath = "/usr/bin/chromium"

// chromium returns the browser, installing Debian's package when it is
// missing (CI runs as root). A missing browser fails the test: it never
// skips.
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s is missing and the test is not root, so it cannot install it: apt-get install chromium", chromiumPath)
	}
	install := func(args ...string) error {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return err
	}
	if install("install", "-y", "--no-install-recommends", "chromium") != nil {
		if err := install("update"); err != nil {
			t.Fatalf("apt-get update: %v", err)
		}
		if err := install("install", "-y", "--no-install-recommends", "chromium"); err != nil {
			t.Fatalf("apt-get install chromium: %v", err)
		}
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium installed but %s is missing: %v", chromiumPath, err)
	}
	return chromiumPath
}

// artifacts is where screenshots go: $RACKBOOT_ARTIFACTS, else the
// repository's artifacts/ folder.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RACKBOOT_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

type seeded struct {
	st                 store.Store
	a100, t4, arm, bad store.Node
	// box seals BMC passwords; sim is the A100 node's BMC (ipmi_sim).
	box *sealbox.Box
	sim *powertest.Sim
}

func ptr[T any](v T) *T { return &v }

// waitCalls waits until the simulated BMC's chassis was asked for call.
func waitCalls(t *testing.T, sim *powertest.Sim, call string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(sim.Calls(), call) {
		if time.Now().After(deadline) {
			t.Fatalf("the BMC never saw %q; it saw:\n%s", call, sim.Calls())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readJSON(t *testing.T, name string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(b) {
		t.Fatalf("%s is not valid JSON", name)
	}
	return b
}

// seed fills a real SQLite store the way the appliance would: nodes
// enrolled by their first network boot, inventories from their agents,
// rack places set by a technician, a boot trace, an image and users.
func seed(t *testing.T) *seeded {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	enroll := func(mac string, arch boot.ClientArch, name, rack string, pos int, state store.State) store.Node {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			t.Fatal(err)
		}
		n, _, err := st.EnrollClient(ctx, boot.Client{MAC: hw, Arch: arch}, now.Add(-2*time.Hour))
		if err != nil {
			t.Fatalf("enroll %s: %v", mac, err)
		}
		if state != store.StateDiscovered {
			if err := st.SetState(ctx, n.ID, state); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptr(name), Rack: ptr(rack), Position: ptr(pos)}); err != nil {
			t.Fatalf("update %s: %v", name, err)
		}
		return n
	}
	s := &seeded{st: st}
	s.a100 = enroll("52:54:00:a1:00:01", boot.ClientX64UEFI, "gpu-a100-01", "A01", 12, store.StateAvailable)
	s.t4 = enroll("52:54:00:74:00:01", boot.ClientX64UEFI, "gpu-t4-01", "A01", 14, store.StateActive)
	s.arm = enroll("52:54:00:aa:00:01", boot.ClientARM64UEFI, "altra-01", "B02", 3, store.StateDiscovered)
	s.bad = enroll("52:54:00:bb:00:01", boot.ClientX86BIOS, "old-bios-01", "B02", 5, store.StateFailed)
	if err := st.SetInventory(ctx, s.a100.ID, readJSON(t, "inventory-a100.json"), []string{"NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetInventory(ctx, s.t4.ID, readJSON(t, "inventory-t4.json"), []string{"NVIDIA Tesla T4"}); err != nil {
		t.Fatal(err)
	}
	// Two boots of the A100 node: one an hour ago that stopped in the
	// loader, one ten minutes ago that went all the way.
	hw, _ := net.ParseMAC("52:54:00:a1:00:01")
	opts := map[string]string{"93": "7", "60": "PXEClient:Arch:00007:UNDI:003000"}
	ipxe := map[string]string{"93": "7", "77": "iPXE"}
	b1, b2 := now.Add(-time.Hour), now.Add(-10*time.Minute)
	for _, e := range []boot.Event{
		{Time: b1, MAC: hw, Proto: "dhcp", Kind: "discover", Options: opts},
		{Time: b1.Add(time.Second), MAC: hw, Proto: "dhcp", Kind: "offer", File: "ipxe/snponly.efi"},
		{Time: b1.Add(3 * time.Second), MAC: hw, Proto: "tftp", Kind: "file", File: "ipxe/snponly.efi", Bytes: 65536, Size: 212992, BlockSize: 1468, Error: "timeout waiting for ACK"},
		{Time: b2, MAC: hw, Proto: "dhcp", Kind: "discover", Options: opts},
		{Time: b2.Add(time.Second), MAC: hw, Proto: "dhcp", Kind: "offer", File: "ipxe/snponly.efi"},
		{Time: b2.Add(2 * time.Second), MAC: hw, Proto: "tftp", Kind: "file", File: "ipxe/snponly.efi", Bytes: 212992, Size: 212992, BlockSize: 1468, Complete: true},
		{Time: b2.Add(8 * time.Second), MAC: hw, Proto: "dhcp", Kind: "discover", Options: ipxe},
		{Time: b2.Add(9 * time.Second), MAC: hw, Proto: "dhcp", Kind: "offer", File: "http://10.0.0.1/boot.ipxe", Options: ipxe},
		{Time: b2.Add(10 * time.Second), MAC: hw, Proto: "core", Kind: "plan", Options: map[string]string{"action": "agent", "kernel": "/agent/amd64/vmlinuz", "initrds": "/agent/amd64/initrd.cpio"}},
		{Time: b2.Add(10 * time.Second), MAC: hw, Proto: "http", Kind: "file", File: "/boot.ipxe", Bytes: 412, Size: 412, Complete: true},
		{Time: b2.Add(12 * time.Second), MAC: hw, Proto: "http", Kind: "file", File: "/agent/amd64/vmlinuz", Bytes: 8 << 20, Size: 8 << 20, Complete: true},
		{Time: b2.Add(14 * time.Second), MAC: hw, Proto: "http", Kind: "file", File: "/agent/amd64/initrd.cpio", Bytes: 6 << 20, Size: 6 << 20, Complete: true},
	} {
		if err := st.AddTrace(ctx, s.a100.ID, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range []store.Event{
		{Time: now.Add(-2 * time.Hour), NodeID: s.a100.ID, Actor: "system", Kind: "transition", To: store.StateDiscovered, Message: "enrolled at its first network boot"},
		{Time: now.Add(-90 * time.Minute), NodeID: s.a100.ID, Actor: "agent:" + s.a100.ID, Kind: "transition", From: store.StateInspecting, To: store.StateAvailable, Message: "inspection finished"},
	} {
		if _, err := st.AddEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	// A burn-in that ended: its figures show on the node page.
	burn, err := st.CreateTask(ctx, store.Task{NodeID: s.a100.ID, Kind: "burnin", Created: now.Add(-3 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	burn.State, burn.Updated = store.TaskDone, now.Add(-150*time.Minute)
	burn.Result = json.RawMessage(`{"passed":false,"verdict":"incomplete","untested":["gpu: 4 GPUs, but no NVIDIA driver here"],
		"tests":[{"name":"memory","outcome":"passed","seconds":900,"figures":{"mb_per_s":10240.5,"bytes":429496729600}},
		{"name":"gpu","outcome":"not run","reason":"4 GPUs, but no NVIDIA driver here"}]}`)
	if err := st.UpdateTask(ctx, burn); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateImage(ctx, store.Image{Name: "debian-12-x86_64", Arch: boot.ArchX86_64, Format: "raw.zst", Size: 712 << 20,
		SHA256: strings.Repeat("ab", 32), Source: "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2", Created: now}); err != nil {
		t.Fatal(err)
	}
	for name, role := range map[string]store.Role{"ada": store.RoleAdmin, "rory": store.RoleReadonly} {
		hash, err := api.HashPassword("correct horse " + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutUser(ctx, store.User{Name: name, Role: role, PasswordHash: hash, Created: now}); err != nil {
			t.Fatal(err)
		}
	}
	// The A100 node's BMC is a real one on loopback: OpenIPMI's ipmi_sim.
	if s.box, err = sealbox.New(sealbox.NewKey()); err != nil {
		t.Fatal(err)
	}
	s.sim = powertest.StartSim(t, "admin", "bmc-pw-a100")
	if err := st.SetBMC(ctx, store.BMC{NodeID: s.a100.ID, URL: s.sim.URL(), User: "admin",
		Password: s.box.Seal([]byte("bmc-pw-a100"), api.BMCPasswordAD(s.a100.ID))}); err != nil {
		t.Fatal(err)
	}
	return s
}

// serve mounts the real API and the UI on one server, as the appliance
// does.
func serve(t *testing.T, s *seeded) *httptest.Server {
	t.Helper()
	srv := api.New(s.st)
	srv.Secrets = s.box
	srv.Version = "test"
	return mount(t, srv)
}

// mount puts the API server and the UI on one test server.
func mount(t *testing.T, srv *api.Server) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/api/", srv.Handler())
	mux.Handle(web.Prefix, web.Handler())
	mux.Handle("/{$}", http.RedirectHandler(web.Prefix, http.StatusFound))
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
	})
	return ts
}

type browser struct {
	t   *testing.T
	ctx context.Context
	mu  sync.Mutex
	// problems are uncaught exceptions and console errors of the page.
	problems []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := chromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("lang", "en-GB"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 960),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	b := &browser{t: t, ctx: ctx}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			text := m.String()
			// A 401 before login and after logout is how the UI learns it
			// has no session; the browser logs every failed request.
			if strings.Contains(text, "401") || strings.Contains(text, "Failed to load resource") {
				continue
			}
			if m.IsException() || m.Type == "error" {
				b.mu.Lock()
				b.problems = append(b.problems, fmt.Sprintf("%s: %s (%s:%d)", m.Type, text, m.URL, m.Line+1))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.fail("%s: %v", what, err)
	}
}

func (b *browser) fail(format string, args ...any) {
	b.t.Helper()
	if shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)); err == nil {
		p := filepath.Join(artifacts(b.t), "failure-"+strings.ReplaceAll(b.t.Name(), "/", "_")+".png")
		os.WriteFile(p, shot, 0o644)
		b.t.Logf("screenshot of the failure: %s", p)
	}
	b.t.Fatalf(format, args...)
}

// eval evaluates a JavaScript expression in the page. DevTools
// evaluation is not bound by the page's CSP (which forbids eval, and so
// chromedp.Poll).
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.fail("evaluate %s: %v", expr, err)
	}
	return v
}

// wait polls a JavaScript condition until it holds.
func (b *browser) wait(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ok, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	b.fail("waiting for %s (%s): timed out (last error: %v)", what, expr, last)
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").replace(/\s+/g, " ").trim()`, sel))
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	// Let the highlight of fresh rows fade.
	time.Sleep(2500 * time.Millisecond)
	shot, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.fail("screenshot %s: %v", name, err)
	}
	if !bytes.HasPrefix(shot, []byte("\x89PNG\r\n\x1a\n")) {
		b.fail("screenshot %s is not a PNG", name)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() < 100 || img.Bounds().Dy() < 100 {
		b.fail("screenshot %s: bad PNG (%v)", name, err)
	}
	p := filepath.Join(artifacts(b.t), name)
	if err := os.WriteFile(p, shot, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
		b.t.Fatalf("screenshot %s: empty file (%v)", p, err)
	}
	b.t.Logf("screenshot: %s (%dx%d, %d bytes)", p, img.Bounds().Dx(), img.Bounds().Dy(), len(shot))
}

func (b *browser) checkNoProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("browser console: %s", p)
	}
}

func (b *browser) login(user, password string) {
	b.t.Helper()
	b.wait("the login form", `document.querySelector("#login-form") && !document.querySelector("#topbar").checkVisibility()`)
	eval[bool](b, `(document.querySelector("#login-user").value = "", document.querySelector("#login-pass").value = "", true)`)
	b.do("log in as "+user,
		chromedp.SendKeys(chromedp.CSS("#login-user"), user),
		chromedp.SendKeys(chromedp.CSS("#login-pass"), password),
		chromedp.Click(chromedp.CSS("#login-submit")))
}

func (b *browser) logout() {
	b.t.Helper()
	b.do("log out", chromedp.Click(chromedp.CSS("#logout")))
	b.wait("the login form after logout", `document.querySelector("#login-form") && document.querySelector("#topbar").hidden`)
	if got := eval[int](b, `fetch("/api/v1/whoami").then(r => r.status)`); got != http.StatusUnauthorized {
		b.fail("whoami after logout: status %d, want 401", got)
	}
}

func TestBrowser(t *testing.T) {
	s := seed(t)
	ts := serve(t, s)
	b := newBrowser(t)
	ctx := context.Background()
	nodeRows := `document.querySelectorAll("#nodes-body tr[data-node]")`

	t.Run("admin", func(t *testing.T) {
		b.t = t
		b.do("open the appliance", chromedp.Navigate(ts.URL+"/"))
		if loc := eval[string](b, "location.pathname"); loc != "/ui/" {
			t.Fatalf("/ went to %s, want /ui/", loc)
		}

		// A wrong password is refused in the form.
		b.login("ada", "wrong password")
		b.wait("the login error", `document.querySelector("#login-error")?.checkVisibility()`)
		if got := b.text("#login-error"); !strings.Contains(got, "Wrong user name or password") {
			t.Errorf("login error %q", got)
		}

		b.login("ada", "correct horse ada")
		b.wait("the node list", nodeRows+".length === 4")
		b.wait("the live stream", `document.querySelector("#live.on")`)
		if got := b.text("#who"); !strings.Contains(got, "ada") || !strings.Contains(got, "admin") {
			t.Errorf("header shows %q, want the user and role", got)
		}
		b.screenshot("nodes-list.png")

		// The list is live: a node that starts inspecting elsewhere
		// changes its row without a reload.
		if _, _, err := s.st.Transition(ctx, s.arm.ID, store.StateDiscovered, store.StateInspecting, "",
			store.Event{Time: time.Now().UTC(), Actor: "user:someone-else", Kind: "action", Message: "inspect"}); err != nil {
			t.Fatal(err)
		}
		b.wait("the altra row to show inspecting", fmt.Sprintf(`document.querySelector('#nodes-body tr[data-node=%q] .state')?.textContent === "inspecting"`, s.arm.ID))

		// "/" jumps to the search box.
		b.do("press /", chromedp.KeyEvent("/"))
		b.wait("the search box focused", `document.activeElement?.id === "q"`)
		// DevTools sends the key's character as an event of its own, which
		// the page's preventDefault on keydown cannot stop (a real key
		// press types nothing): clear it.
		eval[bool](b, `(() => { const q = document.querySelector("#q"); q.value = ""; q.dispatchEvent(new Event("input")); q.blur(); return true })()`)

		// Find the node by its GPU model.
		b.do("filter by GPU", chromedp.SendKeys(chromedp.CSS("#gpu-filter"), "A100"))
		b.wait("one A100 node", nodeRows+".length === 1")
		if got := b.text("#nodes-body"); !strings.Contains(got, "gpu-a100-01") || !strings.Contains(got, "A100") {
			t.Fatalf("filtered list shows %q", got)
		}
		if h := eval[string](b, "location.hash"); !strings.Contains(h, "gpu=A100") {
			t.Errorf("the filter is not in the URL: %q", h)
		}

		// Open it.
		b.do("open the node", chromedp.Click(chromedp.CSS("#nodes-body a.node-link")))
		b.wait("the node page", fmt.Sprintf(`document.querySelector("#node-page")?.dataset.node === %q && document.querySelector("#summary-list")`, s.a100.ID))
		b.wait("the timeline", `document.querySelectorAll("#timeline li.ev").length >= 2`)
		b.wait("the inventory", `document.querySelector("#inventory table.gpus")`)
		b.wait("the boot trace", `document.querySelectorAll("#trace .boot").length === 2`)
		inv := b.text("#inventory")
		for _, want := range []string{"NVIDIA A100-SXM4-40GB", "AMD EPYC 7543", "nvme0n1", "enp65s0f0", "Supermicro", "IOMMU group 52 also holds"} {
			if !strings.Contains(inv, want) {
				t.Errorf("inventory lacks %q", want)
			}
		}
		trace := b.text("#trace")
		for _, want := range []string{"handover", "timeout waiting for ACK", "never got it in full"} {
			if !strings.Contains(trace, want) {
				t.Errorf("boot trace lacks %q: %s", want, trace)
			}
		}

		// The rest of this test must happen on this very page: no reload.
		eval[bool](b, `(window.__rackbootMarker = "kept", true)`)
		before := eval[int](b, `document.querySelectorAll("#timeline li.ev").length`)

		// A dialog is left with Escape, and nothing happens.
		b.do("click deploy", chromedp.Click(chromedp.CSS(`[data-action="deploy"]`)))
		b.wait("the deploy dialog", `document.querySelector("#confirm").open && document.querySelector('#confirm-body select[name="image"]')`)
		if got := eval[[]string](b, `[...document.querySelectorAll('#confirm-body select[name="image"] option:not([value=""])')].map(o => o.value)`); strings.Join(got, ",") != "debian-12-x86_64" {
			t.Errorf("deploy offers images %q", got)
		}
		b.do("press Escape", chromedp.KeyEvent(kb.Escape))
		b.wait("the dialog to close", `!document.querySelector("#confirm").open`)
		if n, _ := s.st.Node(ctx, s.a100.ID); n.State != store.StateAvailable {
			t.Fatalf("cancelled deploy changed the node to %s", n.State)
		}

		// Start an inspection through the confirmation dialog.
		b.do("click inspect", chromedp.Click(chromedp.CSS(`[data-action="inspect"]`)))
		b.wait("the dialog", `document.querySelector("#confirm").open`)
		if got := b.text("#confirm-title"); !strings.Contains(got, "Inspect gpu-a100-01") {
			t.Errorf("dialog title %q", got)
		}
		b.do("confirm", chromedp.SendKeys(chromedp.CSS(`#confirm-body input[name="reason"]`), "replaced a DIMM"),
			chromedp.Click(chromedp.CSS("#confirm-ok")))
		b.wait("the dialog to close", `!document.querySelector("#confirm").open`)
		b.wait("the inspect event in the timeline", `[...document.querySelectorAll("#timeline li.ev")].some(li => li.textContent.includes("inspect") && li.textContent.includes("replaced a DIMM"))`)
		b.wait("the state inspecting", `document.querySelector("#node-page .head-badges .state")?.textContent === "inspecting"`)
		n, err := s.st.Node(ctx, s.a100.ID)
		if err != nil || n.State != store.StateInspecting {
			t.Fatalf("node in the store: %v %v, want inspecting", n.State, err)
		}
		// The agent takes the task and reports progress with its
		// heartbeats; the tasks card shows it without an event.
		task, err := s.st.ClaimTask(ctx, s.a100.ID, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.st.TaskProgress(ctx, task.ID, json.RawMessage(`{"phase":"writing /dev/nvme0n1","done":1073741824,"total":4294967296,"rate":157286400}`), time.Now()); err != nil {
			t.Fatal(err)
		}
		b.wait("the task's progress", `document.querySelector("#tasks .task-progress")?.textContent.includes("25% · writing /dev/nvme0n1 · 1.0 GiB of 4.0 GiB · 150 MiB/s")`)

		// The agent finishes: an event written behind the browser's back
		// reaches the page over the live stream.
		if _, _, err := s.st.Transition(ctx, s.a100.ID, store.StateInspecting, store.StateAvailable, "",
			store.Event{Time: time.Now().UTC(), Actor: "agent:" + s.a100.ID, Kind: "transition", Message: "inventory received: 2 GPUs, 2 disks"}); err != nil {
			t.Fatal(err)
		}
		b.wait("the agent's event in the timeline", `document.querySelector("#timeline li.ev")?.textContent.includes("inventory received")`)
		b.wait("the state available", `document.querySelector("#node-page .head-badges .state")?.textContent === "available"`)
		if after := eval[int](b, `document.querySelectorAll("#timeline li.ev").length`); after < before+2 {
			t.Errorf("timeline has %d events, want at least %d", after, before+2)
		}
		if got := eval[string](b, `window.__rackbootMarker ?? "gone"`); got != "kept" {
			t.Fatalf("the page was reloaded (marker %q)", got)
		}
		if got := eval[int](b, `performance.getEntriesByType("navigation").length`); got != 1 {
			t.Errorf("%d navigations, want 1", got)
		}
		b.wait("the burn-in's figures", `[...document.querySelectorAll("#tasks .task-result .sub")].some(d => d.textContent === "memory: passed · mb_per_s 10240.5 · bytes 429496729600")`)
		if got := b.text("#tasks"); !strings.Contains(got, "gpu: not run (4 GPUs, but no NVIDIA driver here)") ||
			!strings.Contains(got, "incomplete, not passed: gpu: 4 GPUs, but no NVIDIA driver here") {
			t.Errorf("tasks card lacks the GPU test's outcome or the incomplete verdict: %q", got)
		}
		b.screenshot("node-page.png")

		// A refused transition is shown inline: the node went active
		// without an event, so the page still offers inspect.
		if err := s.st.SetState(ctx, s.a100.ID, store.StateActive); err != nil {
			t.Fatal(err)
		}
		b.do("click inspect again", chromedp.Click(chromedp.CSS(`[data-action="inspect"]`)))
		b.wait("the dialog", `document.querySelector("#confirm").open`)
		b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
		b.wait("the inline 409", `document.querySelector("#node-error")?.checkVisibility()`)
		if got := b.text("#node-error"); !strings.Contains(got, "inspect refused: node is active") {
			t.Errorf("inline error %q", got)
		}
		b.wait("inspect disabled once the page knows the node is active", `document.querySelector('[data-action="inspect"]').disabled`)

		// Edit the node's tags.
		b.do("edit", chromedp.Click(chromedp.CSS("#edit-node")))
		b.wait("the edit form", `document.querySelector('#edit-form input[name="tags"]')`)
		eval[bool](b, `(document.querySelector('#edit-form input[name="tags"]').value = "", true)`)
		b.do("save tags", chromedp.SendKeys(chromedp.CSS(`#edit-form input[name="tags"]`), "gpu, mig-ready"),
			chromedp.Click(chromedp.CSS(`#edit-form button[type="submit"]`)))
		b.wait("the new tags", `document.querySelector("#summary-list")?.textContent.includes("mig-ready")`)
		if n, _ := s.st.Node(ctx, s.a100.ID); strings.Join(n.Tags, ",") != "gpu,mig-ready" {
			t.Errorf("tags in the store: %q", n.Tags)
		}

		// Power through the node's BMC from its page: the BMC sees the
		// power-on rackboot sends.
		b.wait("the power controls", `document.querySelector('#power-controls [data-power="on"]')`)
		b.do("power on", chromedp.Click(chromedp.CSS(`#power-controls [data-power="on"]`)))
		b.wait("the power dialog", `document.querySelector("#confirm").open && document.querySelector("#confirm-title").textContent.includes("Power on gpu-a100-01")`)
		b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
		b.wait("the dialog to close", `!document.querySelector("#confirm").open`)
		waitCalls(t, s.sim, "set power 1")
		b.wait("the power event in the timeline", `[...document.querySelectorAll("#timeline li.ev")].some(li => li.textContent.includes("power") && li.textContent.includes("done"))`)

		// A bulk power action from the node list: the node with a BMC is
		// powered off, the one without says why not.
		b.do("open the nodes", chromedp.Click(chromedp.CSS(`a[data-nav="nodes"]`)))
		b.wait("the node list", nodeRows+".length === 4")
		for _, id := range []string{s.a100.ID, s.t4.ID} {
			b.do("select a node", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-node=%q] .select-node`, id))))
		}
		b.wait("two selected", `document.querySelector("#bulk-count")?.textContent === "2 selected"`)
		eval[bool](b, `(document.querySelector('select[name="bulk-action"]').value = "off", true)`)
		b.do("apply", chromedp.Click(chromedp.CSS("#bulk-go")))
		b.wait("the bulk dialog", `document.querySelector("#confirm").open && document.querySelector("#confirm-title").textContent.includes("Power off 2 nodes")`)
		b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
		b.wait("the per-node failure", fmt.Sprintf(`document.querySelector("#bulk-error")?.checkVisibility() && document.querySelector("#bulk-error").textContent.includes(%q)`, s.t4.ID))
		waitCalls(t, s.sim, "set power 0")
		if got := b.text("#toast"); got != "Power off: 1 of 2 done" {
			t.Errorf("bulk toast %q", got)
		}
		if got := b.text("#bulk-error"); !strings.Contains(got, "BMC") {
			t.Errorf("bulk failure says %q, want why the node without a BMC was not powered", got)
		}

		// The rack view: racks by name, nodes by unit, top unit first.
		b.do("open the racks", chromedp.Click(chromedp.CSS(`a[data-nav="racks"]`)))
		b.wait("rack A01", `document.querySelectorAll('.rack[data-rack="A01"] a.slot').length === 2`)
		slots := eval[[]string](b, `[...document.querySelectorAll('.rack[data-rack="A01"] a.slot')].map(a => a.textContent + "|" + a.className)`)
		if len(slots) != 2 || !strings.HasPrefix(slots[0], "gpu-t4-01") || !strings.HasPrefix(slots[1], "gpu-a100-01") || !strings.Contains(slots[1], "state-active") {
			t.Errorf("rack A01 slots %q: want gpu-t4-01 (U14) above gpu-a100-01 (U12, active)", slots)
		}
		if got := eval[[]string](b, `[...document.querySelectorAll(".rack")].map(r => r.dataset.rack)`); strings.Join(got, ",") != "A01,B02" {
			t.Errorf("racks %q, want A01,B02", got)
		}
		b.screenshot("rack-view.png")
		b.do("open a node from its slot", chromedp.Click(chromedp.CSS(`.rack[data-rack="B02"] a.slot.state-failed`)))
		b.wait("the failed node's page", fmt.Sprintf(`document.querySelector("#node-page")?.dataset.node === %q`, s.bad.ID))

		// The other pages render.
		b.do("open images", chromedp.Click(chromedp.CSS(`a[data-nav="images"]`)))
		b.wait("the image", `document.querySelector('#images-table tr[data-image="debian-12-x86_64"] button')`)
		b.do("open admin", chromedp.Click(chromedp.CSS(`a[data-nav="admin"]`)))
		b.wait("the users", `document.querySelectorAll("#users-table tr[data-user]").length === 2`)
		b.do("create a token",
			chromedp.SendKeys(chromedp.CSS(`#token-form input[name="name"]`), "ci"),
			chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)))
		b.wait("the token's secret, once", `document.querySelector("#token-secret input")?.value.startsWith("rbt_")`)
		b.wait("the token in the list", `document.querySelectorAll("#tokens-table tr[data-token]").length === 1`)
		b.screenshot("admin.png")
		b.do("open the audit log", chromedp.Click(chromedp.CSS(`a[data-nav="events"]`)))
		b.wait("the audit log", `document.querySelectorAll("#events-table tbody tr[data-seq]").length >= 5`)
		b.screenshot("events.png")

		if got := eval[string](b, `window.__rackbootMarker ?? "gone"`); got != "kept" {
			t.Errorf("the app reloaded while moving between pages")
		}
		b.logout()
		b.checkNoProblems()
	})

	t.Run("readonly", func(t *testing.T) {
		b.t = t
		b.login("rory", "correct horse rory")
		b.wait("the node list", nodeRows+".length === 4")
		if eval[bool](b, `document.querySelector('a[data-nav="admin"]').checkVisibility()`) {
			t.Error("readonly sees the admin page link")
		}
		b.do("open the T4 node", chromedp.Navigate(ts.URL+"/ui/#/nodes/"+s.t4.ID))
		b.wait("the node page", fmt.Sprintf(`document.querySelector("#node-page")?.dataset.node === %q && document.querySelector("#summary-list")`, s.t4.ID))
		b.wait("the inventory", `document.querySelector("#inventory table.gpus")`)
		b.wait("the timeline", `document.querySelector("#timeline-card")`)
		if got := eval[int](b, `document.querySelectorAll("[data-action], #actions-card, #edit-node, #delete-node").length`); got != 0 {
			t.Errorf("readonly is offered %d action or edit controls", got)
		}
		if inv := b.text("#inventory"); !strings.Contains(inv, "NVIDIA Tesla T4") || !strings.Contains(inv, "5 types") {
			t.Errorf("T4 inventory: %q", inv)
		}
		b.screenshot("node-page-readonly.png")
		// A tablet in portrait: one column, nothing cut off.
		b.do("tablet viewport", chromedp.EmulateViewport(820, 1180))
		if w := eval[int](b, `document.documentElement.scrollWidth`); w > 820 {
			t.Errorf("the node page is %dpx wide on an 820px tablet", w)
		}
		b.screenshot("node-page-tablet.png")
		b.do("desktop viewport", chromedp.ResetViewport())
		b.do("open images", chromedp.Click(chromedp.CSS(`a[data-nav="images"]`)))
		b.wait("the image", `document.querySelector('#images-table tr[data-image="debian-12-x86_64"]')`)
		if got := eval[int](b, `document.querySelectorAll("#images-table button").length`); got != 0 {
			t.Errorf("readonly is offered %d image buttons", got)
		}
		b.logout()
		b.checkNoProblems()
	})

	t.Run("gpus", func(t *testing.T) {
		b.t = t
		// Four HGX nodes burned in, two H100s each; hgx-02's second card
		// moves memory at two thirds of its peers' rate.
		var slow store.Node
		for i := 0; i < 4; i++ {
			hw, _ := net.ParseMAC(fmt.Sprintf("52:54:00:c0:00:%02x", i))
			n, _, err := s.st.EnrollClient(ctx, boot.Client{MAC: hw, Arch: boot.ClientX64UEFI}, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			s.st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptr(fmt.Sprintf("hgx-%02d", i)), Rack: ptr("C03"), Position: ptr(10 + 4*i)})
			s.st.SetInventory(ctx, n.ID, json.RawMessage(`{"version":1}`), []string{"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"})
			bw := 2950.0
			if i == 2 {
				slow, bw = n, 1980
			}
			task, err := s.st.CreateTask(ctx, store.Task{NodeID: n.ID, Kind: "burnin", Created: time.Now().Add(-time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			task.State, task.Updated = store.TaskDone, time.Now().Add(-10*time.Minute)
			task.Result = json.RawMessage(fmt.Sprintf(`{"passed":true,"verdict":"passed","tests":[{"name":"gpu","outcome":"passed","reason":"2 GPUs loaded for 10m0s: every result right, no ECC error",
				"figures":{"gpus_seen":2,"gpu0_tflops":%g,"gpu0_memory_gbps":2940,"gpu0_max_temperature_c":74,"gpu0_min_sm_clock_mhz":1755,
				"gpu1_tflops":%g,"gpu1_memory_gbps":%g,"gpu1_max_temperature_c":77,"gpu1_min_sm_clock_mhz":1740}}]}`, 51.2+float64(i)/10, 51.0+float64(i)/10, bw))
			if err := s.st.UpdateTask(ctx, task); err != nil {
				t.Fatal(err)
			}
		}
		// The readonly role sees both views, as it sees the nodes.
		b.do("open the appliance", chromedp.Navigate(ts.URL+"/ui/#/nodes"))
		b.login("rory", "correct horse rory")
		b.wait("the node list", nodeRows+".length >= 4")
		b.do("open the GPUs", chromedp.Click(chromedp.CSS(`a[data-nav="gpus"]`)))
		b.wait("the cards below their peers", `document.querySelectorAll("#gpus tr[data-gpu]").length === 1`)
		if got := eval[string](b, `document.querySelector("#gpus tr[data-gpu]").dataset.gpu`); got != slow.ID+"/1" {
			t.Errorf("below their peers: %s, want %s/1", got, slow.ID)
		}
		row := b.text("#gpus tr[data-gpu]")
		for _, want := range []string{"hgx-02", "NVIDIA H100 80GB HBM3", "1980", "peers 2940 ×7 · 67%", "below peers"} {
			if !strings.Contains(row, want) {
				t.Errorf("the below row lacks %q: %q", want, row)
			}
		}
		if got := b.text("#gpus-status"); !strings.Contains(got, "1 below their peers") {
			t.Errorf("status %q", got)
		}
		b.screenshot("gpus-below.png")
		b.do("show every card", chromedp.Click(chromedp.CSS("#gpus-all")))
		b.wait("every H100", `document.querySelectorAll("#gpus tr[data-gpu]").length === 8`)
		if got := eval[int](b, `document.querySelectorAll('#gpus [data-verdict="ok"]').length`); got != 7 {
			t.Errorf("%d cards ok, want 7", got)
		}

		b.do("open the slow card's node", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#gpus tr[data-gpu="%s/1"] a`, slow.ID))))
		b.wait("the node's GPU figures", `document.querySelectorAll("#node-gpus tr[data-gpu]").length === 2`)
		if got := eval[[]string](b, `[...document.querySelectorAll("#node-gpus [data-verdict]")].map(e => e.dataset.verdict)`); strings.Join(got, ",") != "ok,below peers" {
			t.Errorf("node verdicts %q", got)
		}
		if got := eval[int](b, `document.querySelectorAll('#node-gpus td[data-below="true"]').length`); got != 1 {
			t.Errorf("%d figures marked below, want 1 (gpu 1's memory bandwidth)", got)
		}
		if got := b.text("#gpus-card"); !strings.Contains(got, "1 of 2 GPUs below their peers") || !strings.Contains(got, "under 90% of the median") {
			t.Errorf("the node's GPU card: %q", got)
		}
		b.screenshot("node-gpus.png")
		// A node without GPU figures says why.
		b.do("open the A100 node", chromedp.Navigate(ts.URL+"/ui/#/nodes/"+s.a100.ID))
		b.wait("why it has no figures", `document.querySelector("#node-gpus")?.textContent.includes("No GPU figures: 4 GPUs, but no NVIDIA driver here")`)
		b.logout()
		b.checkNoProblems()
	})
}

// vmRig is an appliance with one hypervisor, a100-01 (four A100s in
// MIG 3g.20gb,3g.20gb: eight partitions), on a fake libvirt daemon that
// runs x86-64 guests only.
type vmRig struct {
	st   store.Store
	srv  *api.Server
	d    *virttest.Daemon
	host store.Node
}

func seedVMs(t *testing.T) *vmRig {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "rackboot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	r := &vmRig{st: st, d: virttest.New([]boot.Arch{boot.ArchX86_64}, nil)}
	r.srv = api.New(st)
	r.srv.Version = "test"
	r.srv.VMs = &hypervisor.Service{Store: st, Dial: r.d.Dial}
	n, _, err := st.EnrollClient(ctx, boot.Client{MAC: net.HardwareAddr{0x52, 0x54, 0, 0xa1, 0, 0x10}, Arch: boot.ClientX64UEFI}, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateNode(ctx, n.ID, store.NodePatch{Name: ptr("a100-01")}); err != nil {
		t.Fatal(err)
	}
	inv, err := os.ReadFile(filepath.Join("..", "agent", "inventory", "testdata", "a100x4.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetInventory(ctx, n.ID, inv, nil); err != nil {
		t.Fatal(err)
	}
	if r.host, err = st.Node(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.srv.VMs.SetHypervisor(ctx, n.ID, hypervisor.Settings{URI: "qemu+tls://a100-01/system", GPUMode: "mig", GPUProfile: "3g.20gb,3g.20gb", Bridge: "br0"}, "user:test"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []store.Flavor{
		{Name: "g1.mig3", VCPUs: 8, MemoryMiB: 32768, DiskGiB: 20, Arch: boot.ArchX86_64, GPUModel: "A100", GPUMode: "mig", GPUProfile: "3g.20gb"},
		// No hypervisor runs AArch64 guests: this flavor never fits.
		{Name: "a1.small", VCPUs: 2, MemoryMiB: 4096, DiskGiB: 10, Arch: boot.ArchAArch64},
	} {
		if _, err := r.srv.VMs.CreateFlavor(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	for _, im := range []store.Image{
		{Name: "debian-12-x86_64", Arch: boot.ArchX86_64, Format: "raw.zst", Size: 712 << 20, SHA256: strings.Repeat("ab", 32), Created: now},
		{Name: "debian-12-aarch64", Arch: boot.ArchAArch64, Format: "raw.zst", Size: 690 << 20, SHA256: strings.Repeat("cd", 32), Created: now},
	} {
		if err := st.CreateImage(ctx, im); err != nil {
			t.Fatal(err)
		}
	}
	for name, role := range map[string]store.Role{"ada": store.RoleAdmin, "rory": store.RoleReadonly} {
		hash, err := api.HashPassword("correct horse " + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutUser(ctx, store.User{Name: name, Role: role, PasswordHash: hash, Created: now}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// waitDomain waits until the fake daemon's domain name is in state.
func waitDomain(t *testing.T, d *virttest.Daemon, name, state string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		dom, ok := d.Domain(name)
		if ok && dom.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("domain %s: defined %v, state %q; want %q", name, ok, dom.State, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setSelect chooses value in a <select> as a person would: the page
// hears the change.
func (b *browser) setSelect(sel, value string) {
	b.t.Helper()
	ok := eval[bool](b, fmt.Sprintf(`(() => {
		const el = document.querySelector(%q);
		if (!el || ![...el.options].some(o => o.value === %q && !o.disabled)) return false;
		el.value = %q;
		el.dispatchEvent(new Event("change"));
		return true;
	})()`, sel, value, value))
	if !ok {
		b.fail("%s offers no %q to choose", sel, value)
	}
}

func TestBrowserVMs(t *testing.T) {
	r := seedVMs(t)
	ts := mount(t, r.srv)
	b := newBrowser(t)
	ctx := context.Background()
	hv := fmt.Sprintf(`[data-hypervisor=%q]`, r.host.ID)
	partitions := hv + ` [data-usage="partitions"] .meter-num`

	b.do("open the appliance", chromedp.Navigate(ts.URL+"/ui/"))
	b.login("ada", "correct horse ada")
	b.wait("the node list", `document.querySelector("#nodes-body tr[data-node]")`)

	// The hypervisor, empty: eight MIG partitions free.
	b.do("open the hypervisors", chromedp.Click(chromedp.CSS(`a[data-nav="hypervisors"]`)))
	b.wait("the hypervisor", `document.querySelector(`+strconv.Quote(partitions)+`)`)
	if got := b.text(partitions); got != "0 used · 8 free of 8" {
		t.Errorf("partitions of an empty host: %q, want 0 used · 8 free of 8", got)
	}
	if got := b.text(`#hv-totals [data-usage="partitions"] .meter-num`); got != "0 used · 8 free of 8" {
		t.Errorf("the fleet's partitions: %q", got)
	}
	if got := eval[string](b, `document.querySelector(`+strconv.Quote(hv+" a.hv-link")+`)?.getAttribute("href") ?? ""`); got != "#/nodes/"+r.host.ID {
		t.Errorf("the hypervisor links to %q, want its node page", got)
	}
	if got := b.text(hv + " .card-head"); !strings.Contains(got, "a100-01") || !strings.Contains(got, "MIG 3g.20gb,3g.20gb") || !strings.Contains(got, "x86_64") {
		t.Errorf("hypervisor head %q: want its name, arch and GPU mode", got)
	}
	if got := b.text(hv + " .hv-agent"); !strings.Contains(got, "never called in") {
		t.Errorf("the GPU agent of a host that has none: %q", got)
	}

	// The create form: a dry run says where, and creates nothing.
	b.do("open the VMs", chromedp.Click(chromedp.CSS(`a[data-nav="vms"]`)))
	b.wait("the flavors in the form", `document.querySelector('#vm-form select[name="flavor"] option[value="g1.mig3"]')`)
	b.do("name the VM", chromedp.SendKeys(chromedp.CSS(`#vm-form input[name="name"]`), "train-01"))
	b.setSelect(`#vm-form select[name="flavor"]`, "g1.mig3")
	if !eval[bool](b, `document.querySelector('#vm-form select[name="image"] option[value="debian-12-aarch64"]')?.disabled === true`) {
		t.Error("an x86_64 flavor is offered an aarch64 image")
	}
	b.setSelect(`#vm-form select[name="image"]`, "debian-12-x86_64")
	b.do("check placement", chromedp.Click(chromedp.CSS("#vm-check")))
	b.wait("the placement", `document.querySelector("#vm-plan")`)
	if got := b.text("#vm-plan-host"); got != "a100-01" {
		t.Errorf("the dry run places it on %q, want a100-01", got)
	}
	if got := b.text("#vm-plan-note"); got == "" {
		t.Error("the dry run shows no placement note")
	}
	if got := b.text("#vm-plan .plan-devices"); !strings.Contains(got, "mig 3g.20gb") {
		t.Errorf("the dry run's devices: %q, want a MIG 3g.20gb partition", got)
	}
	if vms, err := r.st.VMs(ctx, ""); err != nil || len(vms) != 0 {
		t.Fatalf("after a dry run the store holds %d VMs (%v)", len(vms), err)
	}
	if _, ok := r.d.Domain("train-01"); ok {
		t.Fatal("a dry run defined a domain")
	}
	b.screenshot("vm-create.png")

	// Create it: the VM's page shows it running with its partition.
	b.do("create", chromedp.Click(chromedp.CSS("#vm-create")))
	b.wait("the VM's page", `document.querySelector("#vm-page") && document.querySelector("#vm-summary-list")`)
	waitDomain(t, r.d, "train-01", "running")
	vms, err := r.st.VMs(ctx, "")
	if err != nil || len(vms) != 1 || len(vms[0].Devices) != 1 {
		t.Fatalf("the store holds %+v (%v), want one VM with one device", vms, err)
	}
	vm := vms[0]
	if got := eval[string](b, `document.querySelector("#vm-page").dataset.vm`); got != vm.NodeID {
		t.Errorf("the VM page is of %q, want %q", got, vm.NodeID)
	}
	b.wait("the libvirt state", `document.querySelector("#vm-libvirt-state")?.textContent === "running"`)
	if got := b.text(`#vm-devices-table tr[data-kind="mig"]`); !strings.Contains(got, "3g.20gb") || !strings.Contains(got, vm.Devices[0].Mdev) {
		t.Errorf("the VM's MIG device shows %q, want 3g.20gb and mdev %s", got, vm.Devices[0].Mdev)
	}
	if got := b.text("#vm-hypervisor"); got != "a100-01" {
		t.Errorf("the VM's hypervisor: %q", got)
	}
	if got := eval[string](b, `document.querySelector("#vm-node a")?.getAttribute("href") ?? ""`); got != "#/nodes/"+vm.NodeID {
		t.Errorf("the VM's node link is %q, want its node page", got)
	}
	if got := b.text("#vm-summary-list"); !strings.Contains(got, vm.MAC) || !strings.Contains(got, "g1.mig3") || !strings.Contains(got, "debian-12-x86_64") {
		t.Errorf("the VM's summary %q lacks its MAC, flavor or image", got)
	}
	b.screenshot("vm-page.png")
	// The VM is a node too; its node page leads back.
	b.do("open the VM's node", chromedp.Click(chromedp.CSS("#vm-node a")))
	b.wait("the VM's node page", fmt.Sprintf(`document.querySelector("#node-page")?.dataset.node === %q && document.querySelector("#vm-page-link")`, vm.NodeID))
	if got := eval[string](b, `document.querySelector("#vm-page-link").getAttribute("href")`); got != "#/vms/"+vm.NodeID {
		t.Errorf("the VM's node page links to %q, want its VM page", got)
	}

	// The hypervisor now gives one partition less, and lists the VM.
	b.do("open the hypervisors", chromedp.Click(chromedp.CSS(`a[data-nav="hypervisors"]`)))
	b.wait("one partition used", `document.querySelector(`+strconv.Quote(partitions)+`)?.textContent === "1 used · 7 free of 8"`)
	b.wait("the VM in the hypervisor's list", `document.querySelector(`+strconv.Quote(fmt.Sprintf(`%s a[data-vm=%q]`, hv, vm.NodeID))+`)`)
	b.screenshot("hypervisors.png")

	// The page is live: a VM created elsewhere shows without a reload.
	if _, err := r.srv.VMs.CreateVM(ctx, hypervisor.VMRequest{Name: "side-01", Flavor: "g1.mig3"}, "user:someone-else"); err != nil {
		t.Fatal(err)
	}
	b.wait("two partitions used", `document.querySelector(`+strconv.Quote(partitions)+`)?.textContent === "2 used · 6 free of 8"`)

	// Drain and undrain, each behind a confirmation.
	b.do("drain", chromedp.Click(chromedp.CSS(hv+` [data-drain="on"]`)))
	b.wait("the drain dialog", `document.querySelector("#confirm").open && document.querySelector("#confirm-title").textContent === "Drain a100-01?"`)
	if got := b.text("#confirm-body"); !strings.Contains(got, "train-01") || !strings.Contains(got, "side-01") {
		t.Errorf("the drain dialog %q does not list the VMs to move", got)
	}
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	b.wait("the drained badge", `document.querySelector(`+strconv.Quote(hv+" .hv-drained-badge")+`)`)
	if h, err := r.st.Hypervisor(ctx, r.host.ID); err != nil || !h.Drained {
		t.Fatalf("after drain the hypervisor is drained=%v (%v)", h.Drained, err)
	}
	b.do("undrain", chromedp.Click(chromedp.CSS(hv+` [data-drain="off"]`)))
	b.wait("the undrain dialog", `document.querySelector("#confirm").open && document.querySelector("#confirm-title").textContent === "Undrain a100-01?"`)
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	b.wait("the badge gone", `document.querySelector(`+strconv.Quote(hv+` [data-drain="on"]`)+`) && !document.querySelector(`+strconv.Quote(hv+" .hv-drained-badge")+`)`)
	if h, err := r.st.Hypervisor(ctx, r.host.ID); err != nil || h.Drained {
		t.Fatalf("after undrain the hypervisor is drained=%v (%v)", h.Drained, err)
	}

	// Stop the VM from its page: the daemon's domain shuts off.
	b.do("open the VM", chromedp.Click(chromedp.CSS(fmt.Sprintf(`%s a[data-vm=%q]`, hv, vm.NodeID))))
	b.wait("the VM running", `document.querySelector("#vm-libvirt-state")?.textContent === "running"`)
	if !eval[bool](b, `document.querySelector('[data-vm-action="start"]').disabled`) {
		t.Error("start is offered for a running VM")
	}
	b.do("stop", chromedp.Click(chromedp.CSS(`[data-vm-action="stop"]`)))
	b.wait("the stop dialog", `document.querySelector("#confirm").open && document.querySelector("#confirm-title").textContent === "Stop train-01?"`)
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	waitDomain(t, r.d, "train-01", "shut off")
	// Stop asks the guest (an ACPI shutdown); it does not pull the plug.
	if calls := r.d.Calls(); !slices.Contains(calls, "shutdown train-01") || slices.Contains(calls, "destroy train-01") {
		t.Errorf("the daemon saw %q, want an ACPI shutdown of train-01 and no destroy", calls)
	}
	b.wait("the VM shut off", `document.querySelector("#vm-libvirt-state")?.textContent === "shut off"`)
	if eval[bool](b, `document.querySelector('[data-vm-action="start"]').disabled`) {
		t.Error("start is not offered for a VM that is shut off")
	}
	if dom, _ := r.d.Domain("side-01"); dom.State != "running" {
		t.Errorf("stopping train-01 changed side-01 to %q", dom.State)
	}

	// A flavor no host fits: the refusal explains itself.
	b.do("open the VMs", chromedp.Click(chromedp.CSS(`a[data-nav="vms"]`)))
	b.wait("the VM list and the form", `document.querySelectorAll("#vms-body tr[data-vm]").length === 2 && document.querySelector('#vm-form select[name="flavor"] option[value="a1.small"]')`)
	b.do("name the VM", chromedp.SendKeys(chromedp.CSS(`#vm-form input[name="name"]`), "arm-01"))
	b.setSelect(`#vm-form select[name="flavor"]`, "a1.small")
	b.setSelect(`#vm-form select[name="image"]`, "debian-12-aarch64")
	b.do("check placement", chromedp.Click(chromedp.CSS("#vm-check")))
	b.wait("the refusal", `document.querySelector("#vm-refusal")?.checkVisibility()`)
	if got := b.text("#vm-refusal"); !strings.Contains(got, "No hypervisor takes it") || !strings.Contains(got, "aarch64") {
		t.Errorf("the refusal says %q, want why no aarch64 host takes it", got)
	}
	if b.text("#vm-plan") != "" {
		t.Error("a refusal shows a placement too")
	}
	// Creating it anyway is refused the same way, and nothing is made.
	b.do("create", chromedp.Click(chromedp.CSS("#vm-create")))
	b.wait("the refusal again", `document.querySelector("#vm-refusal")?.checkVisibility() && location.hash === "#/vms"`)
	if _, err := r.st.Node(ctx, "arm-01"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused VM's node: %v", err)
	}

	// A name that is taken is refused inline, in the form.
	eval[bool](b, `(document.querySelector('#vm-form input[name="name"]').value = "", true)`)
	b.do("name the VM after the host", chromedp.SendKeys(chromedp.CSS(`#vm-form input[name="name"]`), "a100-01"))
	b.setSelect(`#vm-form select[name="flavor"]`, "g1.mig3")
	b.do("check placement", chromedp.Click(chromedp.CSS("#vm-check")))
	b.wait("the inline error", `document.querySelector("#vm-error")?.checkVisibility()`)
	if got := b.text("#vm-error"); !strings.Contains(got, "already named a100-01") {
		t.Errorf("the inline error says %q", got)
	}
	if b.text("#vm-answer") != "" {
		t.Error("the earlier refusal still shows beside the inline error")
	}

	// Delete the stopped VM from its page.
	b.do("open the VM", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#vms-body tr[data-vm=%q] a`, vm.NodeID))))
	b.wait("the VM shut off", `document.querySelector("#vm-libvirt-state")?.textContent === "shut off"`)
	b.do("delete", chromedp.Click(chromedp.CSS(`[data-vm-action="delete"]`)))
	b.wait("the delete dialog", `document.querySelector("#confirm").open && document.querySelector("#confirm-title").textContent === "Delete train-01?"`)
	b.do("confirm", chromedp.Click(chromedp.CSS("#confirm-ok")))
	b.wait("back on the VM list with one VM", `location.hash === "#/vms" && document.querySelectorAll("#vms-body tr[data-vm]").length === 1`)
	if _, ok := r.d.Domain("train-01"); ok {
		t.Error("the deleted VM's domain is still defined")
	}
	if vms, err := r.st.VMs(ctx, ""); err != nil || len(vms) != 1 || vms[0].NodeID == vm.NodeID {
		t.Errorf("after the delete the store holds %+v (%v), want side-01 alone", vms, err)
	}
	b.logout()

	// Read-only access sees it all and is offered no control.
	b.login("rory", "correct horse rory")
	b.wait("the node list", `document.querySelector("#nodes-body tr[data-node]")`)
	b.do("open the hypervisors", chromedp.Click(chromedp.CSS(`a[data-nav="hypervisors"]`)))
	b.wait("the hypervisor", `document.querySelector(`+strconv.Quote(partitions)+`)?.textContent === "1 used · 7 free of 8"`)
	if got := eval[int](b, `document.querySelectorAll("[data-drain]").length`); got != 0 {
		t.Errorf("readonly is offered %d drain buttons", got)
	}
	b.do("open the VMs", chromedp.Click(chromedp.CSS(`a[data-nav="vms"]`)))
	b.wait("the VM list", `document.querySelectorAll("#vms-body tr[data-vm]").length === 1`)
	if eval[bool](b, `!!document.querySelector("#vm-form")`) {
		t.Error("readonly is offered the create form")
	}
	b.do("open side-01", chromedp.Click(chromedp.CSS(`#vms-body tr[data-vm] a`)))
	b.wait("side-01's page", `document.querySelector("#vm-libvirt-state")?.textContent === "running"`)
	if got := eval[int](b, `document.querySelectorAll("[data-vm-action], #vm-actions-card").length`); got != 0 {
		t.Errorf("readonly is offered %d VM actions", got)
	}
	// Its agent calls in, and says what it could not do. (Last: a host
	// whose agent called in starts MIG VMs only once their devices are
	// reported.)
	gpus := `{"gpus":[{"index":0,"pci_address":"0000:17:00.0","mig_mode":"Enabled","mig_mode_pending":"Enabled","mig_instances":[{"id":1,"profile":"3g.20gb","profile_id":9,"placement":"0:4","compute_instances":[]},{"id":2,"profile":"3g.20gb","profile_id":9,"placement":"4:4","compute_instances":[]}]}]}`
	if err := r.st.PutHypervisorAgent(ctx, store.HypervisorAgent{NodeID: r.host.ID, Booted: time.Now().Add(-time.Hour), Applied: "mig 3g.20gb,3g.20gb",
		GPUs: []byte(gpus), Errors: []string{"GPU 1 (0000:31:00.0): MIG mode is pending a GPU reset"}}); err != nil {
		t.Fatal(err)
	}
	b.do("open the hypervisors again", chromedp.Click(chromedp.CSS(`a[data-nav="nodes"]`)), chromedp.Click(chromedp.CSS(`a[data-nav="hypervisors"]`)))
	b.wait("the agent's error", `document.querySelector(`+strconv.Quote(hv+" .hv-agent-error")+`)`)
	if got := b.text(hv + " .hv-agent"); !strings.Contains(got, "applied mig 3g.20gb,3g.20gb") || !strings.Contains(got, "GPU 0: 2 MIG") || !strings.Contains(got, "pending a GPU reset") {
		t.Errorf("the GPU agent's report: %q", got)
	}
	b.screenshot("hypervisor-agent.png")
	b.logout()
	b.checkNoProblems()
}
