package cpio

import "fmt"

func fmtSscan(s string, v *int) { fmt.Sscanf(s, "%x", v) }
