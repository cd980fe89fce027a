//go:build linux

// Command minrelay is the least a Redis relay can do, written to measure the ceiling of any
// proxy hop on the bench host, not to be used: one thread, one level-triggered epoll loop, one
// upstream connection. Per loop turn it reads each ready client once, forwards its complete
// commands in one upstream write shared by all clients, and writes each client's replies in one
// write. No routing, no state, no metrics: it supports only commands that get exactly one reply
// (redis-benchmark's tests do).
//
//	minrelay -listen 127.0.0.1:7000 -upstream 127.0.0.1:6379 [-mode goroutines [-procs 1]]
//
// bench/run.sh starts it as the "minrelay" column (CEILING=0 leaves it out).
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7000", "client listen `addr` (IPv4)")
	upstream := flag.String("upstream", "127.0.0.1:6379", "Redis `addr`")
	mode := flag.String("mode", "epoll", "epoll (one thread, one level-triggered loop) or goroutines (the proxy's design, nothing else: goroutines.go)")
	procs := flag.Int("procs", 1, "GOMAXPROCS in goroutines mode (the proxy's default procs: 1)")
	flag.Parse()
	run := run
	if *mode == "goroutines" {
		runtime.GOMAXPROCS(*procs)
		run = runGoroutines
	}
	if err := run(*listen, *upstream); err != nil {
		fmt.Fprintln(os.Stderr, "minrelay:", err)
		os.Exit(1)
	}
}

type client struct {
	fd     int
	in     []byte // bytes read, not yet a complete command
	out    []byte // replies to write this turn
	closed bool   // its replies still arrive and are dropped
}

// pending is one client's run of commands in the upstream stream: the next n replies are its.
type pending struct {
	c *client
	n int
}

type relay struct {
	ep, lfd, ufd int
	clients      map[int32]*client
	fifo         []pending
	upOut, upIn  []byte
	dirty        []*client
	buf          []byte
}

func run(listen, upstream string) error {
	runtime.LockOSThread()
	lfd, err := listenFD(listen)
	if err != nil {
		return err
	}
	ufd, err := dialFD(upstream)
	if err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	r := &relay{ep: ep, lfd: lfd, ufd: ufd, clients: map[int32]*client{}, buf: make([]byte, 64<<10)}
	for _, fd := range []int{lfd, ufd} {
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fmt.Errorf("epoll add: %w", err)
		}
	}
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(ep, events, -1)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll wait: %w", err)
		}
		for _, ev := range events[:n] {
			switch int(ev.Fd) {
			case lfd:
				r.accept()
			case ufd:
				if err := r.upstreamReadable(); err != nil {
					return err
				}
			default:
				r.clientReadable(r.clients[ev.Fd])
			}
		}
		if len(r.upOut) > 0 {
			if err := writeAll(ufd, r.upOut); err != nil {
				return fmt.Errorf("upstream write: %w", err)
			}
			r.upOut = r.upOut[:0]
		}
		for _, c := range r.dirty {
			if !c.closed && writeAll(c.fd, c.out) != nil {
				r.drop(c)
			}
			c.out = c.out[:0]
		}
		r.dirty = r.dirty[:0]
	}
}

func (r *relay) accept() {
	for {
		fd, _, err := syscall.Accept4(r.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return
		}
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if syscall.EpollCtl(r.ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}) != nil {
			syscall.Close(fd)
			continue
		}
		r.clients[int32(fd)] = &client{fd: fd}
	}
}

// clientReadable reads once (level-triggered: anything left raises the next event) and queues
// the complete commands for the shared upstream write.
func (r *relay) clientReadable(c *client) {
	if c == nil || c.closed {
		return
	}
	n, err := syscall.Read(c.fd, r.buf)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return
	}
	if err != nil || n == 0 {
		r.drop(c)
		return
	}
	c.in = append(c.in, r.buf[:n]...)
	end, cmds := 0, 0
	for {
		e := commandEnd(c.in, end)
		if e == -2 {
			r.drop(c) // not a multibulk command: out of this tool's scope
			return
		}
		if e < 0 {
			break
		}
		end, cmds = e, cmds+1
	}
	if cmds > 0 {
		r.upOut = append(r.upOut, c.in[:end]...)
		r.fifo = append(r.fifo, pending{c, cmds})
		c.in = append(c.in[:0], c.in[end:]...)
	}
}

// upstreamReadable hands each complete reply to the client whose command it answers.
func (r *relay) upstreamReadable() error {
	n, err := syscall.Read(r.ufd, r.buf)
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
		return nil
	}
	if err != nil || n == 0 {
		return fmt.Errorf("upstream read: %v (n=%d)", err, n)
	}
	r.upIn = append(r.upIn, r.buf[:n]...)
	i := 0
	for len(r.fifo) > 0 {
		e := replyEnd(r.upIn, i)
		if e == -2 {
			return errors.New("upstream: malformed reply")
		}
		if e < 0 {
			break
		}
		p := &r.fifo[0]
		if !p.c.closed {
			if len(p.c.out) == 0 {
				r.dirty = append(r.dirty, p.c)
			}
			p.c.out = append(p.c.out, r.upIn[i:e]...)
		}
		i = e
		if p.n--; p.n == 0 {
			r.fifo = r.fifo[1:]
		}
	}
	r.upIn = append(r.upIn[:0], r.upIn[i:]...)
	return nil
}

func (r *relay) drop(c *client) {
	if c.closed {
		return
	}
	c.closed = true
	delete(r.clients, int32(c.fd))
	syscall.Close(c.fd) // also leaves the epoll set
}

// writeAll writes b to a non-blocking fd, waiting for room when the socket buffer is full.
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := syscall.Write(fd, b)
		if errors.Is(err, syscall.EAGAIN) && fd < 1024 {
			var w syscall.FdSet
			w.Bits[fd/64] |= 1 << (uint(fd) % 64)
			if _, err := syscall.Select(fd+1, nil, &w, nil, nil); err != nil && !errors.Is(err, syscall.EINTR) {
				return err
			}
			continue
		}
		if errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// line parses the integer of a RESP header line starting at b[i] and returns it with the index
// after its CRLF; ok is false if the line is not complete yet.
func line(b []byte, i int) (v, next int, ok bool) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	for ; i < len(b) && b[i] != '\r'; i++ {
		v = v*10 + int(b[i]-'0')
	}
	if i+1 >= len(b) {
		return 0, 0, false
	}
	if neg {
		v = -v
	}
	return v, i + 2, true
}

// commandEnd returns the end of the multibulk command at b[i:], -1 if it is incomplete, -2 if it
// is not a multibulk.
func commandEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	if b[i] != '*' {
		return -2
	}
	n, j, ok := line(b, i+1)
	if !ok {
		return -1
	}
	for range n {
		if j >= len(b) {
			return -1
		}
		if b[j] != '$' {
			return -2
		}
		l, k, ok := line(b, j+1)
		if !ok || k+l+2 > len(b) {
			return -1
		}
		j = k + l + 2
	}
	return j
}

// replyEnd returns the end of the RESP2 reply at b[i:], -1 if incomplete, -2 if malformed.
func replyEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '+', '-', ':':
		for j := i + 1; j+1 < len(b); j++ {
			if b[j] == '\r' {
				return j + 2
			}
		}
		return -1
	case '$':
		l, j, ok := line(b, i+1)
		switch {
		case !ok:
			return -1
		case l < 0:
			return j
		case j+l+2 > len(b):
			return -1
		}
		return j + l + 2
	case '*':
		n, j, ok := line(b, i+1)
		if !ok {
			return -1
		}
		for range n {
			if j = replyEnd(b, j); j < 0 {
				return j
			}
		}
		return j
	}
	return -2
}

func listenFD(addr string) (int, error) {
	sa, err := sockaddr(addr)
	if err != nil {
		return -1, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("listen: %w", err)
	}
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, sa); err != nil {
		return -1, fmt.Errorf("listen %s: %w", addr, err)
	}
	if err := syscall.Listen(fd, 1024); err != nil {
		return -1, fmt.Errorf("listen %s: %w", addr, err)
	}
	return fd, nil
}

// dialFD connects with the net package, then takes the descriptor out of Go's poller.
func dialFD(addr string) (int, error) {
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		return -1, fmt.Errorf("upstream: %w", err)
	}
	f, err := c.(*net.TCPConn).File() // a duplicate, owned by f
	c.Close()
	if err != nil {
		return -1, fmt.Errorf("upstream: %w", err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd())) // ours, not closed with f
	if err != nil {
		return -1, fmt.Errorf("upstream: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		return -1, fmt.Errorf("upstream: %w", err)
	}
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	return fd, nil
}

func sockaddr(addr string) (*syscall.SockaddrInet4, error) {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	sa := &syscall.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	return sa, nil
}
