package appliance

import (
	"strings"
	"testing"

	"github.com/rackboot/rackboot/tftp"
)

type countsFunc func() map[string]int

func (f countsFunc) Counts() map[string]int { return f() }

func TestPowerMetrics(t *testing.T) {
	var b strings.Builder
	writeMetrics(&b, nil, &tftp.Server{}, &httpCounter{}, countsFunc(func() map[string]int {
		return map[string]int{"on": 9000, "off": 990, "unknown": 10}
	}), nil)
	for _, want := range []string{
		"# TYPE rackboot_power_nodes gauge\n",
		`rackboot_power_nodes{state="on"} 9000` + "\n",
		`rackboot_power_nodes{state="off"} 990` + "\n",
		`rackboot_power_nodes{state="unknown"} 10` + "\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "node=") {
		t.Error("a per-node series")
	}
}
