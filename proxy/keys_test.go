package proxy

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestKeySpecsMatchRedis: every command a real redis-server says takes keys has a row in
// keySpecs, with Redis' own range where the keys do not move.
func TestKeySpecsMatchRedis(t *testing.T) {
	up := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: up.Addr(), Protocol: 2})
	defer rdb.Close()
	infos, err := rdb.Command(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for name, info := range infos {
		movable := slices.Contains(info.Flags, "movablekeys")
		if info.FirstKeyPos == 0 && !movable {
			continue
		}
		k, ok := keySpecs[name]
		switch {
		case !ok:
			t.Errorf("%s: Redis says it takes keys, keySpecs has no row", name)
		case movable && k.find == nil:
			t.Errorf("%s: movable keys, but no function finds them", name)
		case !movable && (k.first != int(info.FirstKeyPos) || k.last != int(info.LastKeyPos) || k.step != int(info.StepCount)):
			t.Errorf("%s: keySpecs %d,%d,%d, Redis %d,%d,%d", name, k.first, k.last, k.step,
				info.FirstKeyPos, info.LastKeyPos, info.StepCount)
		}
	}
	for name := range keySpecs {
		if _, ok := infos[name]; !ok {
			t.Errorf("%s: in keySpecs, not a Redis command", name)
		}
	}
}

// TestKeyPositions: the keys found for a corpus of commands, movable ones and subcommands
// above all, are those COMMAND GETKEYS names on a real redis-server.
func TestKeyPositions(t *testing.T) {
	up := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: up.Addr(), Protocol: 2})
	defer rdb.Close()
	table := newCommandTable(connFamily, statefulFamily, sessionsFamily, scriptingFamily)
	for _, line := range []string{
		"GET k", "SET k v EX 10", "MSET a 1 b 2 c 3", "MGET a b c", "DEL a b c", "BLPOP a b 0",
		"BITOP AND dest a b", "RENAME a b", "COPY a b DB 2", "LMOVE a b LEFT RIGHT", "SMOVE a b m",
		"EVAL x 2 k1 k2 a1", "EVALSHA 0000000000000000000000000000000000000000 1 k1 a1",
		"FCALL f 3 k1 k2 k3", "FCALL_RO f 0", "EVAL_RO x 1 k1",
		"BLMPOP 0 2 a b LEFT COUNT 2", "BZMPOP 1 1 z MIN", "LMPOP 2 a b RIGHT", "ZMPOP 1 z MAX",
		"SINTERCARD 2 a b LIMIT 1", "ZINTERCARD 3 a b c", "ZDIFF 2 a b WITHSCORES", "ZINTER 2 a b",
		"ZUNION 2 a b AGGREGATE MAX", "ZUNIONSTORE d 2 a b WEIGHTS 1 2", "ZINTERSTORE d 1 a",
		"ZDIFFSTORE d 2 a b",
		"SORT l", "SORT l BY w_* GET o_* LIMIT 0 5 STORE dst", "SORT l STORE dst ALPHA", "SORT_RO l BY x",
		"GEORADIUS g 0 0 10 km STORE s1", "GEORADIUS g 0 0 10 km STOREDIST s2 COUNT 3",
		"GEORADIUSBYMEMBER g m 10 km STORE s", "GEORADIUS g 0 0 10 km",
		"MIGRATE h 1 k 0 10", "MIGRATE h 1 \"\" 0 10 COPY REPLACE KEYS a b c",
		"MIGRATE h 1 \"\" 0 10 AUTH pw KEYS a", "MIGRATE h 1 \"\" 0 10 AUTH2 u pw KEYS a b",
		"XREAD COUNT 2 STREAMS s1 s2 0 0", "XREAD BLOCK 0 STREAMS s $",
		"XREADGROUP GROUP g c COUNT 1 BLOCK 0 NOACK STREAMS s1 s2 > >",
		"OBJECT ENCODING k", "OBJECT FREQ k", "MEMORY USAGE k SAMPLES 5", "XINFO STREAM s FULL",
		"XINFO GROUPS s", "XINFO CONSUMERS s g", "XGROUP CREATE s g $ MKSTREAM", "XGROUP DESTROY s g",
		"XGROUP SETID s g 0", "XGROUP CREATECONSUMER s g c", "XGROUP DELCONSUMER s g c",
		"PFMERGE d a b", "PFCOUNT a b", "TOUCH a b", "EXISTS a b a", "WATCH a b", "UNLINK a",
		"SUNIONSTORE d a b", "GEOSEARCHSTORE d s FROMMEMBER m BYRADIUS 1 km", "LCS a b",
		"RESTORE k 0 x", "OBJECT HELP", "PING", "XINFO HELP",
	} {
		args := strings.Fields(line)
		for i, a := range args {
			if a == `""` {
				args[i] = ""
			}
		}
		iargs := make([]any, len(args))
		bargs := make([][]byte, len(args))
		for i, a := range args {
			iargs[i], bargs[i] = a, []byte(a)
		}
		want, err := rdb.CommandGetKeys(context.Background(), iargs...).Result()
		if err != nil { // "the command has no key arguments" and the like
			want = nil
		}
		spec := table.lookup(bargs[0])
		var got []string
		for _, i := range spec.keyPositions(nil, bargs) {
			got = append(got, args[i])
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: keys %q, Redis says %q", line, got, want)
		}
	}
}
