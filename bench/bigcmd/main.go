// Command bigcmd times one very large command: DEL of -n keys (about 17 bytes a key), sent at
// once or in -chunk byte writes, to -addr (the proxy or Redis itself). It prints the bytes sent,
// the reply and the time from the first byte sent to the reply.
//
//	go run ./bench/bigcmd -addr 127.0.0.1:6380 -n 1000000 [-chunk 1024]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6380", "where to send it")
	n := flag.Int("n", 1000000, "keys in the DEL")
	chunk := flag.Int("chunk", 0, "write in pieces of this many bytes (0: one write)")
	flag.Parse()
	b := []byte("*" + strconv.Itoa(*n+1) + "\r\n$3\r\nDEL\r\n")
	for i := range *n {
		k := "key:" + strconv.Itoa(i)
		b = append(b, "$"+strconv.Itoa(len(k))+"\r\n"+k+"\r\n"...)
	}
	c, err := net.DialTimeout("tcp", *addr, 2*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	start := time.Now()
	step := *chunk
	if step <= 0 {
		step = len(b)
	}
	for i := 0; i < len(b); i += step {
		if _, err := c.Write(b[i:min(i+step, len(b))]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Printf("%d bytes, reply %q (%v) in %v\n", len(b), line, err, time.Since(start).Round(time.Millisecond))
}
