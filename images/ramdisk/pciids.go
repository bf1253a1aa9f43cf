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
	open, err := firmware.DebData(deb)
	if err != nil {
		return nil, fmt.Errorf("pci.ids: %w", err)
	}
	var ids []byte
	errFound := errors.New("found")
	err = firmware.ScanTar(open, func(h *tar.Header, r io.Reader) error {
		name := firmware.MemberPath(h.Name)
		if h.Typeflag != tar.TypeReg || (name != PCIIDsPath && name != PCIIDsPath+".gz") {
			return nil
		}
		if strings.HasSuffix(name, ".gz") {
			zr, err := gzip.NewReader(r)
			if err != nil {
				return err
			}
			r = zr
		}
		var err error
		if ids, err = io.ReadAll(io.LimitReader(r, maxFile)); err != nil {
			return err
		}
		return errFound
	})
	switch {
	case errors.Is(err, errFound):
		return ids, nil
	case err != nil:
		return nil, fmt.Errorf("pci.ids: read package: %w", err)
	}
	return nil, errors.New("pci.ids: the package holds no usr/share/misc/pci.ids")
}

// pciIDsArchive is the newc archive that puts the database in place.
func pciIDsArchive(ids []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeTree(&buf, []file{{PCIIDsPath, ids}}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
