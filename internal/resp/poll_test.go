package resp

import (
	"net"
	"testing"
)

// polledPair makes loopback TCP connections whose server ends a Poller wakes.
type polledPair struct {
	*Poller
	ln net.Listener
}

// newPolledPair starts a Poller and a loopback listener for the test; it skips where there is
// no Poller (not Linux).
func newPolledPair(tb testing.TB) *polledPair {
	tb.Helper()
	p, err := NewPoller()
	if err != nil {
		tb.Skipf("no Poller here: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ln.Close()
		p.Close()
	})
	return &polledPair{Poller: p, ln: ln}
}

// pair is a new connection: the client end, and the server end (not on the Poller yet).
func (p *polledPair) pair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := p.ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	if server = <-accepted; server == nil {
		client.Close()
		tb.Fatal("accept failed")
	}
	return client, server
}

// FuzzPollChunks feeds a client connection whose reads the Poller wakes (client_reads: epoll)
// fragmented input over real loopback TCP: redcon must get exactly the whole commands the
// normalizer makes of the input at once, through ReadBatch and through the byte stream.
func FuzzPollChunks(f *testing.F) { fuzzChunks(f, newPolledPair(f)) }
