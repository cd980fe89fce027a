//go:build !linux

package resp

import (
	"errors"
	"time"
)

// Poller is Linux-only (epoll); elsewhere client reads wait on Go's netpoller.
type Poller struct{}

// NewPoller reports that there is no Poller here.
func NewPoller() (*Poller, error) { return nil, errors.ErrUnsupported }

// Close does nothing.
func (p *Poller) Close() error { return nil }

// Poll reports false: reads stay on Go's netpoller.
func (c *Conn) Poll(*Poller) bool { return false }

type pollReader struct{}

func (r *pollReader) read([]byte, bool) (int, int64, error) { panic("unreachable") }
func (r *pollReader) unregister()                           {}
func (r *pollReader) setReadDeadline(time.Time)             {}
