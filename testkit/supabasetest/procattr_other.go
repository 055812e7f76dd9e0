//go:build !linux

package supabasetest

import "os/exec"

// dieWithParent is a no-op where the kernel cannot tie a child's life to
// its parent's; Cleanup stops the process.
func dieWithParent(*exec.Cmd) {}

// processAlive cannot tell here: every owner counts as alive, so nothing
// is swept.
func processAlive(int) bool { return true }
