// Package protocol is what the agent and the server say to each other
// over /api/v1/agent: the message types and the paths, and nothing else,
// so the agent's binary carries no server code and the server no agent
// code.
//
// The exchange follows Ironic's agent_token model. The agent looks its
// node up by MAC and gets a token that is issued once: a second lookup
// while the token lives is refused. Every later call carries the token
// and names the node; a token of another node is refused. The token dies
// when the node changes state or network-boots again, and the agent then
// looks up again.
package protocol

import (
	"encoding/json"
	"time"
)

// Paths, relative to the API base URL (http://S:8080/api/v1).
const (
	LookupPath = "/agent/lookup"
	// The node paths take the node id: fmt.Sprintf(InventoryPath, id).
	InventoryPath = "/agent/nodes/%s/inventory"
	HeartbeatPath = "/agent/nodes/%s/heartbeat"
	TaskPath      = "/agent/nodes/%s/tasks/%s"
	// BMCPath is where an inspecting agent reports the BMC user it
	// enrolled when its inspect task asked for one.
	BMCPath = "/agent/nodes/%s/bmc"
)

// Trace events the server records when an agent calls: proto ProtoAgent,
// kind KindLookup, in the node's boot trace.
const (
	ProtoAgent = "agent"
	KindLookup = "lookup"
)

// TokenPrefix starts every secret rackboot issues, and the token an
// agent makes for its lookup (Lookup.Token).
const TokenPrefix = "rbt_"

// Lookup asks for the node owning one of the agent's MACs. NodeID is the
// id from the kernel command line, when the boot script put one there:
// it must match the node the MACs name. BootSecret is the per-boot secret
// from the kernel command line (rackboot.boot=): the proof that this
// agent was started by the node's own, newest boot script.
type Lookup struct {
	MACs       []string `json:"macs"`
	NodeID     string   `json:"node_id,omitempty"`
	BootSecret string   `json:"boot_secret,omitempty"`
	// Token is the agent token the agent asks for, made from its own
	// random numbers (rbt_ and 64 hex digits) and kept for its lookups
	// until one is answered: a lookup repeated because its answer was
	// lost is answered again, where another agent's is refused while
	// the token lives. Empty: the server makes one.
	Token string `json:"token,omitempty"`
}

// LookupResult hands out the node's agent token.
type LookupResult struct {
	NodeID string `json:"node_id"`
	State  string `json:"state"`
	Token  string `json:"token"`
	// Heartbeat is how often the server wants to hear from the agent.
	Heartbeat Duration `json:"heartbeat"`
}

// Heartbeat says the agent is alive and what it is doing.
type Heartbeat struct {
	// Running is the id of the task the agent is working on, if any.
	Running string `json:"running,omitempty"`
	// Progress is how far Running has got, when the task measures it.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is a running task's latest figures: the server keeps them as
// the task's result until the task ends, and the UI shows them.
type Progress struct {
	// Phase names the step: "writing", "verifying", "wiping /dev/sda".
	Phase string `json:"phase"`
	// Done and Total are bytes; Total is 0 when unknown.
	Done  int64 `json:"done"`
	Total int64 `json:"total,omitempty"`
	// Rate is bytes per second over the phase so far.
	Rate float64 `json:"rate,omitempty"`
}

// HeartbeatResult tells the agent the node's state and, when the agent is
// idle, its next task (already marked running: it is handed out once).
type HeartbeatResult struct {
	State string `json:"state"`
	Task  *Task  `json:"task,omitempty"`
}

// Task kinds.
const (
	TaskInspect = "inspect"
	TaskDeploy  = "deploy"
	TaskWipe    = "wipe"
	TaskBurnin  = "burnin"
	TaskReboot  = "reboot"
)

// Task is work for the agent.
type Task struct {
	ID     string          `json:"id"`
	Kind   string          `json:"kind"`
	Params json.RawMessage `json:"params,omitempty"`
}

// InspectParams are an inspect task's parameters.
type InspectParams struct {
	// BMCEnroll asks the agent to create (or refresh) a rackboot user
	// with a random password on the node's BMC, through the in-band
	// interface, and to report it (BMCEnrollment): the server then
	// power-manages the node with it.
	BMCEnroll bool `json:"bmc_enroll,omitempty"`
}

// BMCEnrollment is the BMC user an agent created for rackboot. It is sent
// once, over the agent's authenticated channel, and never stored in the
// inventory: the server keeps the password sealed.
type BMCEnrollment struct {
	// TaskID is the inspect task that asked for it.
	TaskID string `json:"task_id"`
	// Address is the BMC's LAN address as the BMC itself reports it (an
	// IPv4 or IPv6 literal), Channel the LAN channel it is on.
	Address string `json:"address"`
	Channel int    `json:"channel"`
	User    string `json:"user"`
	// UserID is the BMC's user slot the agent wrote.
	UserID   int    `json:"user_id"`
	Password string `json:"password"`
	// LANAccess is the channel's access mode as the BMC reports it
	// ("disabled" on BMCs that ship with IPMI over LAN off); "" when it
	// did not say.
	LANAccess string `json:"lan_access,omitempty"`
}

// Task outcomes.
const (
	Done   = "done"
	Failed = "failed"
)

// TaskReport ends a task: State is Done or Failed, Error says why it
// failed, Result carries figures (bytes written, throughput).
type TaskReport struct {
	State  string          `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Duration is a time.Duration that reads and writes as "30s".
type Duration time.Duration

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	*d = Duration(v)
	return err
}

// HypervisorPath is where a hypervisor's agent (rackboot-agent
// hypervisor, a service on a deployed GPU hypervisor) calls in:
// fmt.Sprintf(HypervisorPath, nodeID). It proves itself with the
// hypervisor token rackboot issued for that node, which opens this path
// for that node and nothing else. Each call reports what the host's GPUs
// carry and is answered with what they must carry.
const HypervisorPath = "/agent/hypervisors/%s"

// Device kinds a hypervisor's VMs hold (HypervisorDevice.Kind).
const (
	DevicePassthrough = "passthrough"
	DeviceVGPU        = "vgpu"
	DeviceMIG         = "mig"
)

// HypervisorReport is what a hypervisor's agent says each time it calls
// in.
type HypervisorReport struct {
	// Booted is when the host last booted. MIG instances, vGPUs and
	// SR-IOV virtual functions do not survive a boot: a new Booted means
	// the agent has applied the layout again.
	Booted time.Time `json:"booted"`
	// BootID is the kernel's id of the boot (/proc/sys/kernel/random/boot_id):
	// it changes on every boot and only then, where Booted moves when the
	// clock is stepped. Empty from agents that do not send it.
	BootID string `json:"boot_id,omitempty"`
	// Applied is the GPU mode and profile the cards carry as the agent
	// last applied them ("mig 3g.40gb,3g.40gb", "vgpu nvidia-1030",
	// "passthrough"); "" when nothing was applied yet.
	Applied string `json:"applied"`
	// GPUs is what the cards really carry (package gpuconf's State): MIG
	// mode, GPU and compute instances and their UUIDs, mdevs, and on
	// cards whose driver offers vGPU through the vendor-specific VFIO
	// framework their virtual functions with the vGPU type each carries
	// and whether a VM holds it. Null where the host has no NVIDIA
	// driver.
	GPUs json.RawMessage `json:"gpus,omitempty"`
	// Errors are what the agent could not do on this round: a layout a
	// card refused, an mdev that could not be made. Empty when the host
	// carries what it was asked.
	Errors []string `json:"errors,omitempty"`
	// Version is the agent's build.
	Version string `json:"version,omitempty"`
}

// HypervisorWork is the server's answer: the layout the host's GPUs must
// carry and the devices its VMs hold.
type HypervisorWork struct {
	// GPUMode is "", "passthrough", "vgpu" or "mig"; GPUProfile the vGPU
	// type (sysfs type id, nvidia-1030) or the MIG layout, its profiles
	// comma-separated, applied alike to every card.
	GPUMode    string `json:"gpu_mode"`
	GPUProfile string `json:"gpu_profile,omitempty"`
	// Devices are the devices the host's VMs hold. Every vGPU and MIG
	// device here must exist as a mediated device with its UUID, or,
	// where it names a VF, as that virtual function carrying its vGPU
	// type; a mediated device the agent made that is not here is removed,
	// and a virtual function it gave a type that is not here is freed
	// (what it did not make, and no answer listed, is left alone). A passthrough
	// GPU held here and free on a later answer is reset before its next
	// tenant (nvidia-smi -r when bound to nvidia, a function-level reset
	// under vfio-pci once no process holds it); one handed to another VM
	// between two answers is not: libvirt's managed attach reset it.
	Devices []HypervisorDevice `json:"devices"`
	// Interval is when to call in again.
	Interval Duration `json:"interval"`
}

// HypervisorDevice is one device a VM holds on the hypervisor.
type HypervisorDevice struct {
	VM   string `json:"vm"`
	Kind string `json:"kind"` // DevicePassthrough, DeviceVGPU or DeviceMIG
	// GPU is the card's PCI address (0000:17:00.0).
	GPU string `json:"gpu"`
	// Profile is the vGPU type (vgpu) or the MIG profile (mig, 3g.40gb).
	Profile string `json:"profile,omitempty"`
	// Mdev is the mediated device's UUID (vgpu, mig): the VM's domain
	// names it.
	Mdev string `json:"mdev,omitempty"`
	// VF is, instead of Mdev, the virtual function of GPU that is the
	// VM's vGPU (vgpu, mig) on a card whose driver offers vGPU through
	// the vendor-specific VFIO framework: the agent writes Profile's type
	// id to its current_vgpu_type, and the VM's domain passes it through.
	VF string `json:"vf,omitempty"`
}
