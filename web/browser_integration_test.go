//go:build integration

package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/boot"
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
}

func ptr[T any](v T) *T { return &v }

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
	burn.Result = json.RawMessage(`{"passed":true,"tests":[{"name":"memory","outcome":"passed","seconds":900,"figures":{"mb_per_s":10240.5,"bytes":429496729600}},
		{"name":"gpu","outcome":"not run","reason":"nvidia-smi is not in the ramdisk"}]}`)
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
	return s
}

// serve mounts the real API and the UI on one server, as the appliance
// does.
func serve(t *testing.T, st store.Store) *httptest.Server {
	t.Helper()
	srv := api.New(st)
	srv.Version = "test"
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
	ts := serve(t, s.st)
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
		if got := b.text("#tasks"); !strings.Contains(got, "gpu: not run (nvidia-smi is not in the ramdisk)") {
			t.Errorf("tasks card lacks the GPU test's outcome: %q", got)
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
}
