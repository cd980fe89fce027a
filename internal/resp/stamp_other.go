//go:build !linux

package resp

import "net"

// stamper is Linux-only; elsewhere reads carry no receive time.
type stamper struct{}

func newStamper(net.Conn) *stamper { return nil }

func (s *stamper) read(p []byte) (int, int64, error) { panic("unreachable") }

// StampListener does nothing where reads carry no receive time.
func StampListener(net.Listener) {}
