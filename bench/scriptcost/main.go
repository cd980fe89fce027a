// Command scriptcost measures what a session write costs inside Redis: the Redis CPU time per
// write (INFO commandstats usec) of plain HSET, of the proxy's apply_many and apply scripts, and
// of two stripped-down scripts that split the cost into the per-call preamble (the generated
// header and common.lua run on every EVALSHA) and the essential work (the HSET plus the owner
// lookup). It starts its own redis-server unless -addr is given.
//
//	go run ./bench/scriptcost [-addr host:port] [-n 20000] [-run 16] [-best 3]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/rewrite"
)

func main() {
	addr := flag.String("addr", "", "redis host:port (default: start a private redis-server)")
	n := flag.Int("n", 20000, "session writes per variant")
	run := flag.Int("run", 16, "writes per merged apply_many call (a client's pipeline run)")
	best := flag.Int("best", 3, "runs per variant; the least Redis time is reported")
	verbose := flag.Bool("v", false, "print INFO commandstats after each variant")
	dump := flag.String("dump", "", "print the generated body of one script (apply, apply_many, reap, ...) and exit")
	flag.Parse()
	if *addr == "" {
		a, stop, err := startRedis()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer stop()
		*addr = a
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: *addr, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	sch, err := rewrite.NewSchema(rewrite.DefaultPrefix, []rewrite.Rule{rewrite.DefaultRule()})
	if err != nil {
		panic(err)
	}
	sc := sch.Scripts()
	if *dump != "" {
		for _, s := range sc.All() {
			if s.Name == *dump {
				fmt.Print(s.Body)
			}
		}
		return
	}
	header := sc.Apply.Body[:strings.Index(sc.Apply.Body, "-- apply.lua")]
	preamble := header + "return 0\n"
	lean := fmt.Sprintf(`for i, k in ipairs(KEYS) do redis.pcall('HSET', k, 'userid', '42') redis.call('HGET', %q, k) end return 0`, sch.OwnersKey())

	const keys = 10000
	key := func(i int) string { return "session:" + strconv.Itoa(i%keys) }
	// one "unit" is `run` writes; each variant sends n/run units, 50 per pipeline
	type variant struct {
		name string
		cmd  string // commandstats entry that carries the cost
		unit func(p redis.Pipeliner, base int)
	}
	refs := func(k string) []rewrite.Ref {
		return []rewrite.Ref{{Key: []byte(k), Rule: 0, DB: rewrite.CurrentDB, KeepsTTL: true, Owner: []byte("42")}}
	}
	args := func(k string) [][]byte { return [][]byte{[]byte("HSET"), []byte(k), []byte("userid"), []byte("42")} }
	raw := func(p redis.Pipeliner, b []byte) { p.Do(ctx, splitRESP(b)...) }
	variants := []variant{
		{"plain HSET", "hset", func(p redis.Pipeliner, base int) {
			for j := range *run {
				p.HSet(ctx, "plain:"+strconv.Itoa((base+j)%keys), "userid", "42")
			}
		}},
		{fmt.Sprintf("apply_many (%d writes/call)", *run), "evalsha", func(p redis.Pipeliner, base int) {
			ws := make([]rewrite.Writes, *run)
			for j := range ws {
				k := key(base + j)
				ws[j] = rewrite.Writes{Refs: refs(k), Args: args(k)}
			}
			raw(p, sch.AppendApplyMany(nil, &sc.ApplyMany, ws))
		}},
		{fmt.Sprintf("apply_many, owner changes (%d writes/call)", *run), "evalsha", func(p redis.Pipeliner, base int) {
			ws := make([]rewrite.Writes, *run)
			for j := range ws {
				k := key(base + j)
				uid := []byte(strconv.Itoa(100 + (base/keys)%2)) // flips each pass over the keys
				ws[j] = rewrite.Writes{
					Refs: []rewrite.Ref{{Key: []byte(k), Rule: 0, DB: rewrite.CurrentDB, KeepsTTL: true, Owner: uid}},
					Args: [][]byte{[]byte("HSET"), []byte(k), []byte("userid"), uid},
				}
			}
			raw(p, sch.AppendApplyMany(nil, &sc.ApplyMany, ws))
		}},
		{"apply (1 write/call)", "evalsha", func(p redis.Pipeliner, base int) {
			for j := range *run {
				k := key(base + j)
				raw(p, sch.AppendApply(nil, &sc.Apply, false, refs(k), args(k)))
			}
		}},
		{"cluster apply (1 write/call, its slot's bookkeeping)", "evalsha", func(p redis.Pipeliner, base int) {
			for j := range *run {
				k := key(base + j)
				raw(p, sch.AppendClusterApply(nil, &sc.Cluster.Apply, false, refs(k), "tag", args(k)))
			}
		}},
		{"preamble only (header+common.lua, return 0)", "evalsha", func(p redis.Pipeliner, base int) {
			for range *run {
				p.EvalSha(ctx, sha(c, preamble), nil)
			}
		}},
		{fmt.Sprintf("lean script: HSET+HGET owner (%d writes/call)", *run), "evalsha", func(p redis.Pipeliner, base int) {
			ks := make([]string, *run)
			for j := range ks {
				ks[j] = key(base + j)
			}
			p.EvalSha(ctx, sha(c, lean), ks)
		}},
	}
	for _, s := range []*rewrite.Script{&sc.Apply, &sc.ApplyMany, &sc.Cluster.Apply} {
		must(c.ScriptLoad(ctx, s.Body).Err())
	}
	units := *n / *run
	exec := func(v variant) time.Duration {
		t0 := time.Now()
		for u := 0; u < units; u += 50 {
			p := c.Pipeline()
			for k := u; k < min(u+50, units); k++ {
				v.unit(p, k**run)
			}
			cmds, err := p.Exec(ctx)
			must(err)
			for _, cm := range cmds {
				if cm.Err() != nil {
					panic(fmt.Sprintf("%s: %v", v.name, cm.Err()))
				}
			}
		}
		return time.Since(t0)
	}
	exec(variants[1]) // prefill: sessions exist and are indexed, so the writes re-save them
	exec(variants[0])
	fmt.Printf("redis at %s; %d session writes per variant, stable owner, sessions already indexed\n", *addr, units**run)
	fmt.Printf("%-48s %14s %14s %12s\n", "variant", "redis_us/write", "redis_us/call", "wall_writes/s")
	for _, v := range variants {
		exec(v) // warm
		// Best of -best runs: Redis' usec is wall time inside the command, so a busy machine
		// only ever adds to it.
		var calls, usec float64
		var wall time.Duration
		for r := range *best {
			must(c.ConfigResetStat(ctx).Err())
			w := exec(v)
			cl, us := cmdstat(ctx, c, v.cmd)
			if r == 0 || us < usec {
				calls, usec, wall = cl, us, w
			}
		}
		fmt.Printf("%-48s %14.2f %14.2f %12.0f\n", v.name, usec/float64(units**run), usec/calls, float64(units**run)/wall.Seconds())
		if *verbose {
			info, _ := c.Info(ctx, "commandstats").Result()
			fmt.Println(info)
		}
	}
}

var shas = map[string]string{}

// sha loads body once and returns its SHA.
func sha(c *redis.Client, body string) string {
	if s, ok := shas[body]; ok {
		return s
	}
	s, err := c.ScriptLoad(context.Background(), body).Result()
	must(err)
	shas[body] = s
	return s
}

// cmdstat returns calls and usec of one INFO commandstats entry.
func cmdstat(ctx context.Context, c *redis.Client, name string) (calls, usec float64) {
	info, err := c.Info(ctx, "commandstats").Result()
	must(err)
	for _, line := range strings.Split(info, "\r\n") {
		if !strings.HasPrefix(line, "cmdstat_"+name+":") {
			continue
		}
		for _, f := range strings.Split(strings.TrimPrefix(line, "cmdstat_"+name+":"), ",") {
			k, v, _ := strings.Cut(f, "=")
			x, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				calls = x
			case "usec":
				usec = x
			}
		}
	}
	return calls, usec
}

// splitRESP turns one encoded multibulk command back into arguments for go-redis Do.
func splitRESP(b []byte) []any {
	var out []any
	s := string(b)
	line := func() string {
		i := strings.Index(s, "\r\n")
		l := s[:i]
		s = s[i+2:]
		return l
	}
	n, _ := strconv.Atoi(line()[1:])
	for range n {
		l, _ := strconv.Atoi(line()[1:])
		out = append(out, s[:l])
		s = s[l+2:]
	}
	return out
}

func startRedis() (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "scriptcost")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--dir", dir)
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for range 200 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); os.RemoveAll(dir) }, nil
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
