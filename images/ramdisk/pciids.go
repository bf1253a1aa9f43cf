package ramdisk

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/rackboot/rackboot/firmware"
	"github.com/rackboot/rackboot/internal/atomicfile"
)

// PCIIDsPath is where the ramdisk carries the pci.ids database, the
// path the agent's inventory looks in for device names.
const PCIIDsPath = "usr/share/misc/pci.ids"

// PCIIDs is the Debian package the ramdisk's pci.ids came from.
type PCIIDs struct {
	Version   string `json:"version"`
	DebSHA256 string `json:"deb_sha256"`
	Filename  string `json:"filename"`
}

// fetchPCIIDs returns the pci.ids database from Debian's pci.ids package:
// from dir when the package cached there is intact, else downloaded and
// checked against the archive's index. The database is the same for
// every architecture.
func fetchPCIIDs(ctx context.Context, o firmware.Options, dir string, update bool) (PCIIDs, []byte, error) {
	rec := filepath.Join(dir, "pci.ids.json")
	if !update {
		if b, err := os.ReadFile(rec); err == nil {
			var p PCIIDs
			if json.Unmarshal(b, &p) == nil {
				if deb, err := os.ReadFile(filepath.Join(dir, pciIDsDeb(p))); err == nil && sha(deb) == p.DebSHA256 {
					ids, err := pciIDsFromDeb(deb)
					return p, ids, err
				}
			}
		}
	}
	a, err := firmware.Open(ctx, o)
	if err != nil {
		return PCIIDs{}, nil, fmt.Errorf("pci.ids: %w", err)
	}
	pkg, err := a.Find(ctx, firmware.DebianArchAll, "pci.ids")
	if err != nil {
		return PCIIDs{}, nil, fmt.Errorf("pci.ids: %w", err)
	}
	p := PCIIDs{Version: pkg.Version, DebSHA256: pkg.Sum.SHA256, Filename: pkg.Filename}
	deb, err := os.ReadFile(filepath.Join(dir, pciIDsDeb(p)))
	if err != nil || sha(deb) != p.DebSHA256 {
		if deb, err = a.Download(ctx, pkg); err != nil { // checked against the index
			return PCIIDs{}, nil, fmt.Errorf("pci.ids: %w", err)
		}
		if err := atomicfile.Write(filepath.Join(dir, pciIDsDeb(p)), deb); err != nil {
			return PCIIDs{}, nil, fmt.Errorf("pci.ids: cache: %w", err)
		}
	}
	ids, err := pciIDsFromDeb(deb)
	if err != nil {
		return PCIIDs{}, nil, err
	}
	prune(dir, "pci.ids_*.deb", pciIDsDeb(p))
	b, _ := json.MarshalIndent(p, "", "  ")
	if err := atomicfile.Write(rec, append(b, '\n')); err != nil {
		return PCIIDs{}, nil, fmt.Errorf("pci.ids: cache: %w", err)
	}
	return p, ids, nil
}

func pciIDsDeb(p PCIIDs) string {
	return "pci.ids_" + strings.ReplaceAll(p.Version, ":", "%3a") + ".deb"
}

// pciIDsFromDeb reads the database out of the package; some releases
// ship it gzipped.
func pciIDsFromDeb(deb []byte) ([]byte, error) {
	open, err := debTar(deb)
	if err != nil {
		return nil, fmt.Errorf("pci.ids: %w", err)
	}
	rc, err := open()
	if err != nil {
		return nil, fmt.Errorf("pci.ids: %w", err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, errors.New("pci.ids: the package holds no usr/share/misc/pci.ids")
		}
		if err != nil {
			return nil, fmt.Errorf("pci.ids: read package: %w", err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		if h.Typeflag != tar.TypeReg || (name != PCIIDsPath && name != PCIIDsPath+".gz") {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxFile))
		if err != nil {
			return nil, fmt.Errorf("pci.ids: read package: %w", err)
		}
		if strings.HasSuffix(name, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, fmt.Errorf("pci.ids: %w", err)
			}
			if b, err = io.ReadAll(io.LimitReader(zr, maxFile)); err != nil {
				return nil, fmt.Errorf("pci.ids: %w", err)
			}
		}
		return b, nil
	}
}

// pciIDsArchive is the newc archive that puts the database in place.
func pciIDsArchive(ids []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeTree(&buf, []file{{PCIIDsPath, ids}}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
