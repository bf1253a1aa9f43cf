package catalog

import "strconv"

func jsonInt(n int) (string, error) { return strconv.Itoa(n), nil }
