package appliance

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/images/ramdisk/payload"
)

func TestHypervisorAgentConfig(t *testing.T) {
	sums := map[boot.Arch]string{boot.ArchX86_64: strings.Repeat("0f", 32)}
	pin := "sha256:" + strings.Repeat("cd", 32)
	for _, tc := range []struct {
		name, base, api string
		pins            []string
		want            string
	}{
		{"one port", "http://10.0.0.1:8080", "", nil, "rackboot.api=http://10.0.0.1:8080 rackboot.node=n-1"},
		{"the API over TLS on its own port", "http://10.0.0.1:8080", "https://10.0.0.1:8443", []string{pin},
			"rackboot.api=https://10.0.0.1:8443 rackboot.node=n-1 rackboot.files=http://10.0.0.1:8080 rackboot.ca=" + pin},
	} {
		a, err := hypervisorAgent(tc.base, tc.api, tc.pins, sums)("n-1", boot.ArchX86_64)
		if err != nil || a.Config != tc.want || a.BinaryURL != tc.base+"/artifacts/x86_64/rackboot-agent" || a.SHA256 != sums[boot.ArchX86_64] {
			t.Errorf("%s: %+v %v", tc.name, a, err)
		}
	}
	if _, err := hypervisorAgent("http://h", "", nil, sums)("n-1", boot.ArchAArch64); err == nil || !strings.Contains(err.Error(), "no agent for aarch64") {
		t.Errorf("an architecture with no agent: %v", err)
	}
}

// TestPublishAgents: the agents this binary carries are put where the
// boot port serves them, with the checksums the seeds pin; a binary
// without them publishes none.
func TestPublishAgents(t *testing.T) {
	dir := t.TempDir()
	sums, err := publishAgents(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := payload.Load(payload.Embedded(), "amd64"); errors.Is(err, payload.ErrMissing) {
		if len(sums) != 0 {
			t.Errorf("a binary with no payload published %v", sums)
		}
		return
	}
	for arch := range goarchOf {
		b, err := os.ReadFile(filepath.Join(dir, ArtifactsDir, string(arch), AgentBinary))
		if err != nil || sha(b) != sums[arch] || len(b) < 1<<20 {
			t.Errorf("%s: %d bytes, sum %s, want %s: %v", arch, len(b), sha(b), sums[arch], err)
		}
	}
	again, err := publishAgents(dir, slog.New(slog.DiscardHandler))
	if err != nil || len(again) != len(sums) {
		t.Errorf("publish again: %v %v", again, err)
	}
}
