// Command orderprobe measures how often Redis itself runs two commands, written in order on two
// of its connections, in the other order. A fresh connection A sends a blocking XREADGROUP;
// right after its write returns, B sends DEL of the stream. In order, A gets -UNBLOCKED;
// reversed, -NOGROUP. B is either a connection of its own ("separate", what two direct
// clients do) or the one that created the group just before ("same", what a proxy's shared
// connection does: Redis keeps a connection it served in its last event-loop turn at the head of
// its ready list, so it can be read before one that became readable earlier).
//
//	go run ./bench/orderprobe -addr 127.0.0.1:6379 -n 3000
//
// Point -addr at the proxy to measure it the same way. Bounded: -n runs, each with a 2 s deadline.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "Redis (or proxy) address")
	n := flag.Int("n", 3000, "runs per shape")
	flag.Parse()
	for _, same := range []bool{false, true} {
		bad, err := probe(*addr, *n, same)
		shape := "separate"
		if same {
			shape = "same"
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "orderprobe:", err)
			os.Exit(1)
		}
		fmt.Printf("%s: %d of %d runs out of order\n", shape, bad, *n)
	}
}

type conn struct {
	nc net.Conn
	br *bufio.Reader
}

func dial(addr string) (*conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	return &conn{nc, bufio.NewReader(nc)}, nil
}

func (c *conn) send(args ...string) error {
	_ = c.nc.SetDeadline(time.Now().Add(2 * time.Second))
	_, err := c.nc.Write(resp.AppendCommand(nil, args...))
	return err
}

func (c *conn) reply() (string, error) {
	b, err := resp.AppendReply(nil, c.br)
	return string(b), err
}

func (c *conn) do(args ...string) (string, error) {
	if err := c.send(args...); err != nil {
		return "", err
	}
	return c.reply()
}

func probe(addr string, n int, same bool) (int, error) {
	setup, err := dial(addr)
	if err != nil {
		return 0, err
	}
	defer setup.nc.Close()
	other, err := dial(addr)
	if err != nil {
		return 0, err
	}
	defer other.nc.Close()
	b := other
	if same {
		b = setup
	}
	bad := 0
	for range n {
		a, err := dial(addr)
		if err != nil {
			return bad, err
		}
		if _, err := a.do("PING"); err != nil {
			return bad, err
		}
		if _, err := setup.do("XGROUP", "CREATE", "orderprobe", "g", "$", "MKSTREAM"); err != nil {
			return bad, err
		}
		if err := a.send("XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "orderprobe", ">"); err != nil {
			return bad, err
		}
		if err := b.send("DEL", "orderprobe"); err != nil {
			return bad, err
		}
		r, err := a.reply()
		if err != nil {
			return bad, err
		}
		if _, err := b.reply(); err != nil {
			return bad, err
		}
		if !strings.HasPrefix(r, "-UNBLOCKED") {
			bad++
		}
		a.nc.Close()
		if _, err := setup.do("DEL", "orderprobe"); err != nil {
			return bad, err
		}
	}
	return bad, nil
}
