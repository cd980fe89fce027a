// Command bigreply times large replies: it stores one value of -size bytes, then sends -n
// pipelined GETs of it in one write to -addr (the proxy or Redis itself) and reads the replies
// as they come. It prints the time to the first reply byte and to the last, and, with -pid, the
// peak RSS (VmHWM) of that process, which the kernel counts from its start: run it against a
// fresh proxy. With -slow, the client reads in 64 KiB steps 1 ms apart (about 64 MB/s).
//
//	go run ./bench/bigreply -addr 127.0.0.1:6380 -n 50 -size 10485760 [-pid PID] [-slow]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6380", "where to send it")
	n := flag.Int("n", 50, "pipelined GETs")
	size := flag.Int("size", 10<<20, "value bytes")
	pid := flag.Int("pid", 0, "report this process's peak RSS (VmHWM)")
	slow := flag.Bool("slow", false, "read slowly (64 KiB a millisecond)")
	key := flag.String("key", "bigreply:value", "key to store the value under")
	flag.Parse()
	if err := run(*addr, *key, *n, *size, *slow); err != nil {
		fmt.Fprintln(os.Stderr, "bigreply:", err)
		os.Exit(1)
	}
	if *pid > 0 {
		fmt.Printf("peak RSS of %d: %s\n", *pid, hwm(*pid))
	}
}

func run(addr, key string, n, size int, slow bool) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	br := bufio.NewReaderSize(c, 64<<10)
	val := strings.Repeat("x", size)
	if _, err := c.Write(resp.AppendCommand(nil, "SET", key, val)); err != nil {
		return err
	}
	if line, err := br.ReadString('\n'); err != nil || line != "+OK\r\n" {
		return fmt.Errorf("SET: %q %v", line, err)
	}
	var req []byte
	for range n {
		req = resp.AppendCommand(req, "GET", key)
	}
	start := time.Now()
	if _, err := c.Write(req); err != nil {
		return err
	}
	if _, err := br.Peek(1); err != nil {
		return err
	}
	first := time.Since(start)
	want := int64(n) * int64(len("$"+strconv.Itoa(size)+"\r\n")+size+2)
	buf := make([]byte, 64<<10)
	var got int64
	for got < want {
		m, err := br.Read(buf)
		got += int64(m)
		if err != nil && err != io.EOF {
			return err
		}
		if err == io.EOF {
			return fmt.Errorf("closed after %d of %d bytes", got, want)
		}
		if slow {
			time.Sleep(time.Millisecond)
		}
	}
	total := time.Since(start)
	fmt.Printf("%d x GET of %d bytes: first byte after %v, all %d bytes after %v\n", n, size, first.Round(time.Millisecond), got, total.Round(time.Millisecond))
	return nil
}

// hwm is the VmHWM line of /proc/<pid>/status.
func hwm(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	return "?"
}
