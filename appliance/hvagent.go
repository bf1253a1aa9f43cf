package appliance

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/rackboot/rackboot/boot"
	"github.com/rackboot/rackboot/hypervisor"
	"github.com/rackboot/rackboot/images/ramdisk/payload"
	"github.com/rackboot/rackboot/internal/atomicfile"
)

// AgentBinary is the static agent's name under artifacts/<arch>/, where
// the boot port serves it to the hypervisors rackboot deploys.
const AgentBinary = "rackboot-agent"

// goarchOf are the architectures rackboot serves an agent for.
var goarchOf = map[boot.Arch]string{boot.ArchX86_64: "amd64", boot.ArchAArch64: "arm64"}

// publishAgents puts the agent this binary carries, for each
// architecture, under artifacts/<arch>/ (rewritten only when it changed),
// and returns each one's SHA-256. A binary built without its payload
// serves none, and says so.
func publishAgents(dataDir string, log *slog.Logger) (map[boot.Arch]string, error) {
	sums := map[boot.Arch]string{}
	for arch, goarch := range goarchOf {
		progs, err := payload.Load(payload.Embedded(), goarch)
		if errors.Is(err, payload.ErrMissing) {
			log.Warn("no hypervisor agent to serve: hypervisor deploys are refused", "arch", arch, "err", err)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("publish the agent for %s: %w", arch, err)
		}
		for _, p := range progs {
			if p.Name != AgentBinary {
				continue
			}
			file := filepath.Join(dataDir, ArtifactsDir, string(arch), AgentBinary)
			sum := p.SHA256()
			if have, err := os.ReadFile(file); err != nil || sha(have) != sum {
				if err := atomicfile.Write(file, p.Data); err != nil {
					return nil, fmt.Errorf("publish the agent for %s: %w", arch, err)
				}
			}
			sums[arch] = sum
		}
	}
	return sums, nil
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// hypervisorAgent says how a hypervisor's agent is installed and reaches
// this server: as a ramdisk's agent does (rackboot.api=, rackboot.files=,
// rackboot.ca=), with the agent served on the boot port.
func hypervisorAgent(baseURL, apiURL string, pins []string, sums map[boot.Arch]string) func(string, boot.Arch) (hypervisor.Agent, error) {
	return func(nodeID string, arch boot.Arch) (hypervisor.Agent, error) {
		sum, ok := sums[arch]
		if !ok {
			return hypervisor.Agent{}, fmt.Errorf("this rackboot serves no agent for %s (%v)", arch, payload.ErrMissing)
		}
		api := apiURL
		if api == "" {
			api = baseURL
		}
		cfg := "rackboot.api=" + api + " rackboot.node=" + nodeID
		if api != baseURL {
			cfg += " rackboot.files=" + baseURL
		}
		if len(pins) > 0 {
			cfg += " rackboot.ca=" + strings.Join(pins, ",")
		}
		return hypervisor.Agent{BinaryURL: baseURL + "/artifacts/" + string(arch) + "/" + AgentBinary, SHA256: sum, Config: cfg}, nil
	}
}
