//go:build tools

// This file pins the u-root programs that `rackboot ramdisk build` packs
// into the agent ramdisk (and the u-root builder that packs them), so
// that go.mod and go.sum hold every module they need and the build works
// offline from the module cache. It is never compiled.
package tools

import (
	_ "github.com/u-root/u-root"
	_ "github.com/u-root/u-root/cmds/core/cat"
	_ "github.com/u-root/u-root/cmds/core/dmesg"
	_ "github.com/u-root/u-root/cmds/core/gosh"
	_ "github.com/u-root/u-root/cmds/core/init"
	_ "github.com/u-root/u-root/cmds/core/ip"
	_ "github.com/u-root/u-root/cmds/core/ls"
	_ "github.com/u-root/u-root/cmds/core/ps"
)
