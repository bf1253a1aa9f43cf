//go:build integration

package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// figure is a number a script must print: the first group of re, which
// must be above zero (a rate, a ratio) or, with zero set, exactly zero (a
// failure count).
type figure struct {
	re   string
	zero bool
}

// TestSmoke runs every benchmark script at its tiny size (SMOKE=1) against
// a rackboot built for the test, and checks that each printed its result
// lines with real figures: a script that breaks, or a server it measures
// that no longer answers, fails here rather than on the day someone
// benchmarks. The figures themselves are not judged: that is make bench.
func TestSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the benchmark scripts need root: network namespaces (dhcp.sh) and the anchors' packages")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "rackboot")
	build := exec.Command("go", "build", "-o", bin, "./cmd/rackboot")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build rackboot: %v\n%s", err, out)
	}
	num := `([0-9]+(?:\.[0-9]+)?)`
	for _, tc := range []struct {
		script  string
		env     []string
		figures []figure
	}{
		{"dhcp.sh", nil, []figure{
			{re: `(?m)^200\s+rackboot\s+` + num + `\s`}, {re: `(?m)^200\s+kea-persist\s+` + num + `\s`},
			{re: `(?m)^200\s+kea\s+` + num + `\s`}, {re: `(?m)^200\s+dnsmasq\s+` + num + `\s`},
			{re: `(?m)^200\s+rackboot / kea-persist: ` + num}}},
		{"dhcp.sh", []string{"SERVERS=rackboot-pg kea-pg"}, []figure{
			{re: `(?m)^200\s+rackboot-pg\s+` + num + `\s`}, {re: `(?m)^200\s+kea-pg\s+` + num + `\s`},
			{re: `(?m)^200\s+rackboot-pg / kea-pg: ` + num}}},
		{"tftp.sh", nil, []figure{
			{re: `(?m)^blksize 1468\s+windowsize 1\s+tftpd-hpa\s+\S+ s\s+` + num + ` MB/s`},
			{re: `(?m)^blksize 1468\s+windowsize 32\s+atftpd\s+\S+ s\s+` + num + ` MB/s`},
			{re: `(?m)^blksize 1468\s+windowsize 1\s+rackboot\s+\S+ s\s+` + num + ` MB/s`},
			{re: `(?m)^blksize 1468\s+windowsize 32\s+rackboot\s+\S+ s\s+` + num + ` MB/s`},
			{re: `(?m)^1468\s+1\s+\S+\s+\S+\s+\S+\s+` + num + `$`},
			{re: `(?m)^1468\s+32\s+\S+\s+\S+\s+-\s+` + num + `$`}}},
		{"deploy.sh", nil, []figure{
			{re: `(?m)^agent #1\s+\S+ \(` + num + `\)`}, {re: `(?m)^pipeline #1\s+\S+ \(` + num + `\)`},
			{re: `(?m)^agent speed / pipeline speed:\s+` + num}}},
		{"http.sh", nil, []figure{
			{re: `(?m)^median whole rackboot mbps=` + num}, {re: `(?m)^median whole rackboot .* failures=` + num, zero: true},
			{re: `(?m)^median range rackboot mbps=` + num}, {re: `(?m)^median range rackboot .* failures=` + num, zero: true},
			{re: `(?m)^median whole nginx mbps=` + num}, {re: `(?m)^median range nginx mbps=` + num},
			{re: `(?m)^ratio whole rackboot/nginx=` + num}, {re: `(?m)^ratio range rackboot/nginx=` + num}}},
		{"api.sh", nil, []figure{
			{re: `(?m)^median .*\blist_per_s=` + num}, {re: `(?m)^median .*\bnode_per_s=` + num},
			{re: `(?m)^median .*\bheartbeat_per_s=` + num}, {re: `(?m)^median .*\bfailures=` + num, zero: true}}},
		{"storm.sh", nil, []figure{
			{re: `(?m)^rackboot-new N=10 #1 .*\bdone=` + num}, {re: `(?m)^rackboot-new N=10 #1 .*\bagents=` + num},
			{re: `(?m)^rackboot-known N=10 #1 .*\bagents=` + num}, {re: `(?m)^anchor N=10 #1 .*\bdone=` + num},
			{re: `(?m)^median N=10 rackboot-new .*\blookup_p99_ms=` + num}, {re: `(?m)^median N=10 rackboot-known .*\bheartbeat_p99_ms=` + num},
			{re: `(?m)^median N=10 rackboot-new .*\bfailures=` + num, zero: true}, {re: `(?m)^median N=10 rackboot-known .*\bfailures=` + num, zero: true},
			{re: `(?m)^ratio N=10 new nodes: .*=` + num}, {re: `(?m)^ratio N=10 known nodes: .*=` + num}}},
	} {
		t.Run(strings.Join(append([]string{tc.script}, tc.env...), " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			start := time.Now()
			cmd := exec.CommandContext(ctx, "bash", filepath.Join("bench", tc.script))
			cmd.Dir = root
			// The servers a script starts in the background hold its
			// output open: at the deadline the whole group goes, and the
			// wait for the output is bounded, so a hung script fails here
			// instead of hanging the run.
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Cancel = func() error {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
				time.AfterFunc(5*time.Second, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
				return nil
			}
			cmd.WaitDelay = 15 * time.Second
			// A script killed before its trap ran leaves its namespaces.
			t.Cleanup(func() {
				for _, ns := range []string{"rbbench-s", "rbbench-c", "rbstorm-s", "rbstorm-c"} {
					exec.Command("ip", "netns", "del", ns).Run()
				}
			})
			cmd.Env = append(append(os.Environ(), "SMOKE=1", "RACKBOOT="+bin), tc.env...)
			out, err := cmd.CombinedOutput()
			t.Logf("%s took %s", tc.script, time.Since(start).Round(100*time.Millisecond))
			if err != nil {
				t.Fatalf("%s: %v\n%s", tc.script, err, out)
			}
			for _, f := range tc.figures {
				m := regexp.MustCompile(f.re).FindSubmatch(out)
				if m == nil {
					t.Errorf("%s printed nothing matching %s", tc.script, f.re)
					continue
				}
				v, err := strconv.ParseFloat(string(m[1]), 64)
				switch {
				case err != nil:
					t.Errorf("%s: %q in %q: %v", tc.script, m[1], m[0], err)
				case f.zero && v != 0:
					t.Errorf("%s: %q: want 0", tc.script, m[0])
				case !f.zero && v <= 0:
					t.Errorf("%s: %q: want a figure above 0", tc.script, m[0])
				}
			}
			if t.Failed() {
				t.Logf("%s printed:\n%s", tc.script, out)
			}
		})
	}
}
