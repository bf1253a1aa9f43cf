package deploy

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// Seed is a cloud-init NoCloud seed: what the deployed OS learns about
// itself on first boot.
type Seed struct {
	Hostname string   `json:"hostname"`
	SSHKeys  []string `json:"ssh_keys,omitempty"`
	// Network is a network-config document (version 2, netplan's
	// format), passed on as is.
	Network json.RawMessage `json:"network,omitempty"`
	// UserData replaces the generated #cloud-config when given.
	UserData string `json:"user_data,omitempty"`
	// InstanceID changes with every deploy, so cloud-init runs again.
	InstanceID string `json:"instance_id"`
}

// seedSize is the CIDATA partition: FAT32 wants at least 32 MiB.
const seedSize = 64 << 20

// basicData is the GPT type of a FAT data partition, stored as its
// mixed-endian bytes (EBD0A0A2-B9E5-4433-87C0-68B6B72699C7).
var basicData = []byte{0xa2, 0xa0, 0xd0, 0xeb, 0xe5, 0xb9, 0x33, 0x44, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7}

func (s Seed) files() (map[string][]byte, error) {
	if s.Hostname == "" || strings.ContainsAny(s.Hostname, " \n\t:") {
		return nil, fmt.Errorf("cloud-init seed: hostname %q", s.Hostname)
	}
	if s.InstanceID == "" {
		return nil, errors.New("cloud-init seed: no instance id")
	}
	meta, _ := json.Marshal(map[string]string{"instance-id": s.InstanceID, "local-hostname": s.Hostname})
	user := s.UserData
	if user == "" {
		var b strings.Builder
		b.WriteString("#cloud-config\n")
		fmt.Fprintf(&b, "hostname: %s\n", s.Hostname)
		if len(s.SSHKeys) > 0 {
			b.WriteString("ssh_authorized_keys:\n")
			for _, k := range s.SSHKeys {
				k = strings.TrimSpace(k)
				if strings.ContainsAny(k, "\n\r") || k == "" {
					return nil, errors.New("cloud-init seed: an SSH key spans lines or is empty")
				}
				kb, _ := json.Marshal(k)
				fmt.Fprintf(&b, "  - %s\n", kb)
			}
		}
		user = b.String()
	}
	files := map[string][]byte{"meta-data": meta, "user-data": []byte(user)}
	if len(s.Network) > 0 {
		if !json.Valid(s.Network) {
			return nil, errors.New("cloud-init seed: network config is not valid JSON")
		}
		files["network-config"] = s.Network
	}
	return files, nil
}

// WriteSeed puts a NoCloud seed on the disk: a FAT32 filesystem labelled
// CIDATA in a new partition in the last 64 MiB, which must be free (write
// the image, then the seed, then grow). grow makes the image's last
// partition take the space up to the seed.
func WriteSeed(f *os.File, sector int64, s Seed, grow bool) error {
	files, err := s.files()
	if err != nil {
		return err
	}
	if sector != 512 {
		return fmt.Errorf("cloud-init seed: FAT32 here needs 512-byte sectors, the disk has %d", sector)
	}
	t, err := readTable(f, sector)
	if err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	free := int64(-1)
	for i := int64(0); i < t.count; i++ {
		if !t.used(i) {
			free = i
			break
		}
	}
	if free < 0 {
		return errors.New("cloud-init seed: the GPT has no free entry")
	}
	end := t.lastUsable
	start := (end - seedSize/sector + 1) &^ 2047 // MiB-aligned
	_, lastEnd := t.last()
	if int64(lastEnd) >= start {
		return fmt.Errorf("cloud-init seed: no room after the image (it ends at sector %d, the seed needs %d onwards)", lastEnd, start)
	}
	e := t.entry(free)
	copy(e[0:16], basicData)
	rand.Read(e[16:32])
	binary.LittleEndian.PutUint64(e[32:], uint64(start))
	binary.LittleEndian.PutUint64(e[40:], uint64(end))
	binary.LittleEndian.PutUint64(e[48:], 0)
	name := utf16le("cidata")
	for i := range e[56:128] {
		e[56+i] = 0
	}
	copy(e[56:], name)
	if grow {
		last, _ := t.last()
		// last is now the seed; grow the one before it.
		prev, prevEnd := int64(-1), uint64(0)
		for i := int64(0); i < t.count; i++ {
			if i != last && t.used(i) {
				if pe := binary.LittleEndian.Uint64(t.entry(i)[40:]); pe >= prevEnd {
					prev, prevEnd = i, pe
				}
			}
		}
		if prev >= 0 {
			binary.LittleEndian.PutUint64(t.entry(prev)[40:], uint64(start-1))
		}
	}
	if err := t.write(); err != nil {
		return fmt.Errorf("cloud-init seed: %w", err)
	}
	fs, err := fat32.Create(file.New(f, false), (end-start+1)*sector, start*sector, sector, "CIDATA", false)
	if err != nil {
		return fmt.Errorf("cloud-init seed: format: %w", err)
	}
	for n, data := range files {
		w, err := fs.OpenFile("/"+n, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("cloud-init seed: %s: %w", n, err)
		}
		if _, err := w.Write(data); err != nil {
			return fmt.Errorf("cloud-init seed: %s: %w", n, err)
		}
		w.Close()
	}
	return f.Sync()
}

func utf16le(s string) []byte {
	b := make([]byte, 0, 2*len(s))
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return b
}
