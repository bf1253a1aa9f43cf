// Package boot is the vocabulary that the protocol servers (dhcp, tftp,
// httpboot) share with the core that decides what a machine boots. It holds
// types only: who is asking (Client), what they get (Offer, Plan) and what
// happened on the wire (Event). It imports nothing of rackboot, so the
// protocol packages can depend on it without depending on each other.
package boot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// ClientArch is the client system architecture from DHCP option 93
// (RFC 4578 and the IANA "Processor Architecture Types" registry).
type ClientArch uint16

// The option 93 values rackboot serves.
const (
	ClientX86BIOS       ClientArch = 0  // x86 BIOS, PXE ROM
	ClientIA32UEFI      ClientArch = 6  // 32-bit UEFI; no loader is offered
	ClientX64UEFI       ClientArch = 7  // x86-64 UEFI (EFI BC)
	ClientX64UEFIAlt    ClientArch = 9  // x86-64 UEFI, as some firmware sends it
	ClientARM64UEFI     ClientArch = 11 // AArch64 UEFI
	ClientX64UEFIHTTP   ClientArch = 16 // x86-64 UEFI HTTP boot
	ClientARM64UEFIHTTP ClientArch = 19 // AArch64 UEFI HTTP boot
)

// Arch is a CPU architecture as images and ramdisks name it.
type Arch string

// The architectures rackboot boots.
const (
	ArchUnknown Arch = ""
	ArchX86_64  Arch = "x86_64"
	ArchAArch64 Arch = "aarch64"
)

// Firmware is the kind of firmware a client booted with.
type Firmware string

// Firmware kinds.
const (
	FirmwareUnknown Firmware = ""
	FirmwareBIOS    Firmware = "bios"
	FirmwareUEFI    Firmware = "uefi"
)

// Arch reports the CPU architecture of a client type.
func (c ClientArch) Arch() Arch {
	switch c {
	case ClientX86BIOS, ClientX64UEFI, ClientX64UEFIAlt, ClientX64UEFIHTTP:
		return ArchX86_64
	case ClientARM64UEFI, ClientARM64UEFIHTTP:
		return ArchAArch64
	}
	return ArchUnknown
}

// Firmware reports whether a client type is BIOS or UEFI.
func (c ClientArch) Firmware() Firmware {
	switch c {
	case ClientX86BIOS:
		return FirmwareBIOS
	case ClientIA32UEFI, ClientX64UEFI, ClientX64UEFIAlt, ClientARM64UEFI, ClientX64UEFIHTTP, ClientARM64UEFIHTTP:
		return FirmwareUEFI
	}
	return FirmwareUnknown
}

// AgentUserClass is the user class (DHCP option 77) of rackboot's agent:
// its DHCP goes in the boot trace of the boot that loaded it. AgentNoRNG,
// a second user class, says the agent's random pool was not seeded: it
// waits for it before it can call in over TLS.
const (
	AgentUserClass = "rackboot-agent"
	AgentNoRNG     = "no-rng"
)

// IsAgentUserClass reports whether uc, option 77 as the DHCP server reads
// it (classes joined by commas), is the agent's.
func IsAgentUserClass(uc string) bool {
	first, _, _ := strings.Cut(uc, ",")
	return first == AgentUserClass
}

// HTTP reports whether the client type is UEFI HTTP boot, which wants a URL
// as its boot file instead of a TFTP path.
func (c ClientArch) HTTP() bool {
	return c == ClientX64UEFIHTTP || c == ClientARM64UEFIHTTP
}

func (c ClientArch) String() string {
	switch c {
	case ClientX86BIOS:
		return "x86-bios"
	case ClientIA32UEFI:
		return "ia32-uefi"
	case ClientX64UEFI, ClientX64UEFIAlt:
		return "x86_64-uefi"
	case ClientARM64UEFI:
		return "aarch64-uefi"
	case ClientX64UEFIHTTP:
		return "x86_64-uefi-http"
	case ClientARM64UEFIHTTP:
		return "aarch64-uefi-http"
	}
	return fmt.Sprintf("arch-%d", uint16(c))
}

// Client is what a DHCP request tells about the machine asking to boot.
type Client struct {
	MAC         net.HardwareAddr
	Arch        ClientArch
	VendorClass string // option 60, e.g. "PXEClient:Arch:00007:UNDI:003000"
	UserClass   string // option 77, "iPXE" once iPXE runs
	IPXE        bool   // iPXE is asking (user class or option 175): never offer it a loader again
	UUID        []byte // option 97, the client machine identifier
	// Network is the subnet the client sits on when the DHCP server knows it
	// (authoritative mode); the zero prefix otherwise.
	Network netip.Prefix
}

// Offer is the boot file a DHCP reply points a client at.
type Offer struct {
	// File is a TFTP path ("ipxe/snponly.efi") or, for UEFI HTTP boot and
	// for iPXE, an http:// URL.
	File string
	// HTTPClient marks the reply with vendor class "HTTPClient", which UEFI
	// HTTP boot firmware requires before it will use the URL.
	HTTPClient bool
	// Node is the id of the node the client was enrolled as, for logs.
	Node string
	// NextServer is the TFTP server of File (siaddr and option 66) when
	// it is not rackboot: an Ironic conductor's tftp_server.
	NextServer netip.Addr
}

// Booter is the core's answer to "what should this client boot?". The DHCP
// server asks it for every PXE or HTTP boot client it sees; the core enrolls
// the node as a side effect. An error means: make no boot offer.
type Booter interface {
	BootOffer(ctx context.Context, c Client) (Offer, error)
}

// Action is what a node's boot script does.
type Action string

// Boot actions.
const (
	// ActionNetboot boots the kernel and initrds of the plan.
	ActionNetboot Action = "netboot"
	// ActionLocal leaves the network and boots the local disk.
	ActionLocal Action = "local"
)

// ErrUnknownNode is a boot request for a MAC that is no node's. A boot
// request (TFTP, boot HTTP) does not enroll one: a firmware DHCP exchange
// does.
var ErrUnknownNode = errors.New("no node has this MAC: a node is enrolled by its firmware's DHCP exchange")

// ErrOtherOwner is a boot request of a node another provisioning system
// owns (owner ironic): rackboot boots it nothing of its own.
var ErrOtherOwner = errors.New("the node is owned by Ironic: rackboot boots it nothing of its own")

// Plan is what one node should boot now, from which the iPXE script and the
// GRUB config are generated. Every string may come from a node or an
// operator and must be escaped by the generator that writes it.
type Plan struct {
	Action   Action
	Node     string   // node id
	Hostname string   // shown in menus and logs
	Arch     Arch     // CPU architecture of the kernel to boot
	Kernel   string   // absolute URL or path of the kernel
	Initrds  []string // absolute URLs or paths of the initrds, in order
	Cmdline  string   // kernel command line
}

// Event is one step of one boot as a protocol server saw it: a DHCP
// exchange, or a file served over TFTP or HTTP. The core turns events into
// a node's boot trace.
type Event struct {
	Time  time.Time
	MAC   net.HardwareAddr // empty when the server only knows the address
	IP    netip.Addr       // the client's address, when known
	Proto string           // "dhcp", "tftp" or "http"
	// Kind is, for DHCP, the message type ("discover", "offer", "request",
	// "ack", "nak", "decline", "release", "inform"); for files, "file".
	Kind string
	File string // the boot file offered (DHCP) or served (TFTP, HTTP)
	// Bytes is how much of File was sent, Size its full length (-1 unknown).
	Bytes, Size int64
	// BlockSize and WindowSize are the negotiated TFTP options.
	BlockSize, WindowSize int
	// Complete is true when the whole file reached the client.
	Complete bool
	Error    string
	// Options holds the client's DHCP options that matter for booting,
	// by number ("93", "60", "77", "97"), as text.
	Options map[string]string
}

// Recorder takes boot events. Implementations must not block for long:
// protocol servers call it on their serving path.
type Recorder interface {
	Record(ctx context.Context, e Event)
}

// BatchRecorder is a Recorder that takes many events in one call, as
// Queue hands them on, so that it can keep them in one write.
type BatchRecorder interface {
	Recorder
	RecordBatch(ctx context.Context, es []Event)
}

// RecorderFunc adapts a function to Recorder.
type RecorderFunc func(ctx context.Context, e Event)

// Record calls f.
func (f RecorderFunc) Record(ctx context.Context, e Event) { f(ctx, e) }
