//go:build !linux

package tcp

import "net"

// quiet is the connection itself where raw system calls are not used.
func quiet(nc net.Conn) net.Conn { return nc }
