package hypervisor_test

import (
	"io"
	"log/slog"
	"time"
)

var (
	testTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	quiet    = slog.New(slog.NewTextHandler(io.Discard, nil))
)
