//go:build !linux

package proxy

import "net"

// listenTCP listens; Go sets TCP keep-alive on each accepted connection.
func listenTCP(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }
