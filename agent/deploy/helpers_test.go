package deploy

import (
	"fmt"
	"strconv"
)

func itoa(n int) string { return strconv.Itoa(n) }

func fmtSscanf(rg string, s *int) (int, error) { return fmt.Sscanf(rg, "bytes=%d-", s) }
