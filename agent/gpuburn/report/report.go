// Package report is what rackboot-gpuburn prints: the agent's burn-in
// reads it without importing the helper's driver code, which would make
// the static agent load the C library.
package report

// Report is one run of the helper.
type Report struct {
	GPUs []GPU `json:"gpus"`
	// Error says why the load could not start on any GPU (no libcuda,
	// cuInit failing, no devices): the GPUs were not tested.
	Error string `json:"error,omitempty"`
}

// GPU is one device's run.
type GPU struct {
	// Index is the CUDA device ordinal, in PCI bus order.
	Index int    `json:"index"`
	Name  string `json:"name"`
	// PCIBusID is CUDA's form, "0000:17:00.0".
	PCIBusID    string `json:"pci_bus_id"`
	MemoryBytes int64  `json:"memory_bytes"`
	// Iterations is how many kernel launches were checked.
	Iterations int64 `json:"iterations"`
	// Errors counts the blocks whose results disagreed with the
	// reference, across all launches, and the memory copies read back
	// wrong.
	Errors     int64  `json:"errors"`
	FirstError string `json:"first_error"`
	// TFLOPS is single-precision throughput under the load, 3 FLOPs per
	// step of a chain (a multiply and a fused multiply-add).
	TFLOPS float64 `json:"tflops"`
	// MemoryGBps is device-to-device copy bandwidth, bytes read plus
	// bytes written.
	MemoryGBps float64 `json:"memory_gbps"`
	Seconds    float64 `json:"seconds"`
	// Failed is the driver call that failed on this GPU, with CUDA's
	// words: the load did not finish there.
	Failed string `json:"failed,omitempty"`
}
