package server

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenQueue returns how many connections the kernel has completed on a
// TCP listener that it has not accepted yet (Linux reports a listening
// socket's accept-queue length in tcpi_unacked). ok is false when it
// cannot be read.
func listenQueue(ln net.Listener) (n int, ok bool) {
	sc, isSC := ln.(syscall.Conn)
	if !isSC {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var serr error
	if err := raw.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || serr != nil {
		return 0, false
	}
	return int(info.Unacked), true
}
