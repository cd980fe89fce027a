//go:build !linux

package resp

import "net"

// stamper is Linux-only; elsewhere reads carry no receive time.
type stamper struct{}

func newStamper(net.Conn, bool) *stamper { return nil }

func (s *stamper) read(p []byte) (int, int64, error) { panic("unreachable") }

// StampListener does nothing where reads carry no receive time.
func StampListener(net.Listener) bool { return false }

// Prober is Linux-only; elsewhere it sees nothing.
type Prober struct{}

// NewProber returns nil: no probing.
func NewProber() *Prober { return nil }

// Close does nothing.
func (p *Prober) Close() error { return nil }

// Add does nothing.
func (p *Prober) Add(*Conn) {}

// Earlier reports false.
func (p *Prober) Earlier(*Conn, int64, int64) bool { return false }
