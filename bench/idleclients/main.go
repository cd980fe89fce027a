// Command idleclients opens -n client connections to -addr (the proxy), sends one PING on each
// and keeps them idle, then prints the proxy's RSS (VmRSS/VmHWM of -pid) and how many
// connections Redis at -redis has (INFO clients): what idle clients cost (issue 16: at most
// 300 MB for 10,000, and Redis no more connections than the shared pool's).
//
//	go run ./bench/idleclients -addr 127.0.0.1:6380 -pid $(pgrep -f 'sessionproxy -listen') -redis 127.0.0.1:6379
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6380", "the proxy")
	pid := flag.Int("pid", 0, "the proxy's process id")
	redis := flag.String("redis", "127.0.0.1:6379", "Redis itself")
	n := flag.Int("n", 10000, "idle clients")
	flag.Parse()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range *n {
		c, err := net.DialTimeout("tcp", *addr, 2*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial", i, err)
			break
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
			fmt.Fprintln(os.Stderr, "write", i, err)
			break
		}
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			fmt.Fprintln(os.Stderr, "read", i, err)
			break
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // let the proxy settle
	fmt.Printf("idle clients: %d\n", len(conns))
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS") || strings.HasPrefix(l, "VmHWM") {
				fmt.Println("proxy", strings.Join(strings.Fields(l), " "))
			}
		}
	}
	if c, err := net.DialTimeout("tcp", *redis, 2*time.Second); err == nil {
		_, _ = c.Write([]byte("*2\r\n$4\r\nINFO\r\n$7\r\nclients\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4096)
		k, _ := c.Read(buf)
		for _, l := range strings.Split(string(buf[:k]), "\r\n") {
			if strings.HasPrefix(l, "connected_clients:") {
				fmt.Println("redis", l, "(this one included)")
			}
		}
		c.Close()
	}
}
