//go:build tools

// This file pins the u-root programs that make build compiles into the
// agent ramdisks' payload (images/ramdisk/payload), so that go.mod and
// go.sum hold every module they need and the build works offline from
// the module cache. It is never compiled.
package tools

import (
	_ "github.com/u-root/u-root/cmds/core/cat"
	_ "github.com/u-root/u-root/cmds/core/dmesg"
	_ "github.com/u-root/u-root/cmds/core/gosh"
	_ "github.com/u-root/u-root/cmds/core/init"
	_ "github.com/u-root/u-root/cmds/core/ip"
	_ "github.com/u-root/u-root/cmds/core/ls"
	_ "github.com/u-root/u-root/cmds/core/ps"
)
