//go:build !linux

package proxy

import (
	"errors"
	"runtime"
)

// pollYield yields to the run queue only, where there is no socket pair trick (see yield_linux.go).
type pollYield struct{}

func newPollYield() (*pollYield, error) { return nil, errors.New("pollyield: not on this system") }

func (*pollYield) wait()  { runtime.Gosched() }
func (*pollYield) close() {}
