//go:build !linux

package server

import "net"

// listenQueue cannot read the accept queue outside Linux.
func listenQueue(net.Listener) (int, bool) { return 0, false }
