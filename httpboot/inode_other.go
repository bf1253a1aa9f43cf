//go:build !unix

package httpboot

import "io/fs"

// inode is 0 where the platform has no inode numbers; size and time remain.
func inode(fs.FileInfo) uint64 { return 0 }
