//go:build !linux

package netturn

import "runtime"

// Yield yields to the run queue only, where there is no socket pair trick (see yield_linux.go).
type Yield struct{}

// New returns nil: Wait yields to the run queue.
func New() *Yield { return nil }

// Wait yields to the run queue.
func (*Yield) Wait() { runtime.Gosched() }

// Close does nothing.
func (*Yield) Close() {}
