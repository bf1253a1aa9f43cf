// Command testinit is the init of the lab's test initrd: it proves a
// network-booted kernel started with rackboot's command line by printing
// one marker line on the console, then powers the machine off.
package main

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	os.Mkdir("/proc", 0o555)
	syscall.Mount("proc", "/proc", "proc", 0, "")
	cmdline, _ := os.ReadFile("/proc/cmdline")
	var u syscall.Utsname
	syscall.Uname(&u)
	machine := string(bytes.TrimRight(int8sToBytes(u.Machine[:]), "\x00"))
	con, err := os.OpenFile("/dev/console", os.O_WRONLY, 0)
	if err != nil {
		con = os.Stdout
	}
	fmt.Fprintf(con, "\nRACKBOOT-PAYLOAD arch=%s cmdline=%s\n", machine, bytes.TrimSpace(cmdline))
	con.Sync()
	time.Sleep(time.Second)
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func int8sToBytes[T int8 | uint8](s []T) []byte {
	b := make([]byte, len(s))
	for i, c := range s {
		b[i] = byte(c)
	}
	return b
}
