//go:build !linux

package proxy

import "runtime"

// pollYield yields to the run queue only, where there is no socket pair trick (see yield_linux.go).
type pollYield struct{}

func newPollYield() *pollYield { return nil }

func (*pollYield) wait()  { runtime.Gosched() }
func (*pollYield) close() {}
