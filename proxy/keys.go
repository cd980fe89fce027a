package proxy

import (
	"bytes"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// keySpec says which arguments of a command are keys, as Redis' COMMAND reports them: a range
// (first, last, step; last < 0 counts from the end), or for commands whose key positions move
// with their arguments (COMMAND's movablekeys) a function; container commands (OBJECT, XINFO...)
// name them per subcommand. Cluster routing and the rewrite planner need them; the table below
// is checked against a real redis-server's COMMAND and COMMAND GETKEYS (keys_test.go).
type keySpec struct {
	first, last, step int
	find              func(dst []int, args [][]byte) []int
	subs              map[string]keySpec // by upper-case subcommand
}

// any reports whether the command takes keys at all.
func (k *keySpec) any() bool { return k.first > 0 || k.find != nil || k.subs != nil }

// positions appends the indexes in args of the command's keys to dst. A command with the wrong
// arity yields the keys that fit (Redis answers it with its own error anyway).
func (k *keySpec) positions(dst []int, args [][]byte) []int {
	if k.subs != nil {
		if len(args) < 2 {
			return dst
		}
		sub, ok := k.subs[string(bytes.ToUpper(args[1]))]
		if !ok {
			return dst
		}
		return sub.positions(dst, args)
	}
	if k.find != nil {
		return k.find(dst, args)
	}
	if k.first <= 0 {
		return dst
	}
	last := k.last
	if last < 0 {
		last += len(args)
	}
	for i := k.first; i <= last && i < len(args); i += k.step {
		dst = append(dst, i)
	}
	return dst
}

// keySpecs holds every redis-server 7.0 command that takes keys, from COMMAND (first, last,
// step); the movable ones below.
var keySpecs = map[string]keySpec{
	"append":               rng(1, 1, 1),
	"bitcount":             rng(1, 1, 1),
	"bitfield":             rng(1, 1, 1),
	"bitfield_ro":          rng(1, 1, 1),
	"bitop":                rng(2, -1, 1),
	"bitpos":               rng(1, 1, 1),
	"blmove":               rng(1, 2, 1),
	"blpop":                rng(1, -2, 1),
	"brpop":                rng(1, -2, 1),
	"brpoplpush":           rng(1, 2, 1),
	"bzpopmax":             rng(1, -2, 1),
	"bzpopmin":             rng(1, -2, 1),
	"copy":                 rng(1, 2, 1),
	"decr":                 rng(1, 1, 1),
	"decrby":               rng(1, 1, 1),
	"del":                  rng(1, -1, 1),
	"dump":                 rng(1, 1, 1),
	"exists":               rng(1, -1, 1),
	"expire":               rng(1, 1, 1),
	"expireat":             rng(1, 1, 1),
	"expiretime":           rng(1, 1, 1),
	"geoadd":               rng(1, 1, 1),
	"geodist":              rng(1, 1, 1),
	"geohash":              rng(1, 1, 1),
	"geopos":               rng(1, 1, 1),
	"georadius_ro":         rng(1, 1, 1),
	"georadiusbymember_ro": rng(1, 1, 1),
	"geosearch":            rng(1, 1, 1),
	"geosearchstore":       rng(1, 2, 1),
	"get":                  rng(1, 1, 1),
	"getbit":               rng(1, 1, 1),
	"getdel":               rng(1, 1, 1),
	"getex":                rng(1, 1, 1),
	"getrange":             rng(1, 1, 1),
	"getset":               rng(1, 1, 1),
	"hdel":                 rng(1, 1, 1),
	"hexists":              rng(1, 1, 1),
	"hget":                 rng(1, 1, 1),
	"hgetall":              rng(1, 1, 1),
	"hincrby":              rng(1, 1, 1),
	"hincrbyfloat":         rng(1, 1, 1),
	"hkeys":                rng(1, 1, 1),
	"hlen":                 rng(1, 1, 1),
	"hmget":                rng(1, 1, 1),
	"hmset":                rng(1, 1, 1),
	"hrandfield":           rng(1, 1, 1),
	"hscan":                rng(1, 1, 1),
	"hset":                 rng(1, 1, 1),
	"hsetnx":               rng(1, 1, 1),
	"hstrlen":              rng(1, 1, 1),
	"hvals":                rng(1, 1, 1),
	"incr":                 rng(1, 1, 1),
	"incrby":               rng(1, 1, 1),
	"incrbyfloat":          rng(1, 1, 1),
	"lcs":                  rng(1, 2, 1),
	"lindex":               rng(1, 1, 1),
	"linsert":              rng(1, 1, 1),
	"llen":                 rng(1, 1, 1),
	"lmove":                rng(1, 2, 1),
	"lpop":                 rng(1, 1, 1),
	"lpos":                 rng(1, 1, 1),
	"lpush":                rng(1, 1, 1),
	"lpushx":               rng(1, 1, 1),
	"lrange":               rng(1, 1, 1),
	"lrem":                 rng(1, 1, 1),
	"lset":                 rng(1, 1, 1),
	"ltrim":                rng(1, 1, 1),
	"mget":                 rng(1, -1, 1),
	"move":                 rng(1, 1, 1),
	"mset":                 rng(1, -1, 2),
	"msetnx":               rng(1, -1, 2),
	"persist":              rng(1, 1, 1),
	"pexpire":              rng(1, 1, 1),
	"pexpireat":            rng(1, 1, 1),
	"pexpiretime":          rng(1, 1, 1),
	"pfadd":                rng(1, 1, 1),
	"pfcount":              rng(1, -1, 1),
	"pfdebug":              rng(2, 2, 1),
	"pfmerge":              rng(1, -1, 1),
	"psetex":               rng(1, 1, 1),
	"pttl":                 rng(1, 1, 1),
	"rename":               rng(1, 2, 1),
	"renamenx":             rng(1, 2, 1),
	"restore":              rng(1, 1, 1),
	"restore-asking":       rng(1, 1, 1),
	"rpop":                 rng(1, 1, 1),
	"rpoplpush":            rng(1, 2, 1),
	"rpush":                rng(1, 1, 1),
	"rpushx":               rng(1, 1, 1),
	"sadd":                 rng(1, 1, 1),
	"scard":                rng(1, 1, 1),
	"sdiff":                rng(1, -1, 1),
	"sdiffstore":           rng(1, -1, 1),
	"set":                  rng(1, 1, 1),
	"setbit":               rng(1, 1, 1),
	"setex":                rng(1, 1, 1),
	"setnx":                rng(1, 1, 1),
	"setrange":             rng(1, 1, 1),
	"sinter":               rng(1, -1, 1),
	"sinterstore":          rng(1, -1, 1),
	"sismember":            rng(1, 1, 1),
	"smembers":             rng(1, 1, 1),
	"smismember":           rng(1, 1, 1),
	"smove":                rng(1, 2, 1),
	"spop":                 rng(1, 1, 1),
	"spublish":             rng(1, 1, 1),
	"srandmember":          rng(1, 1, 1),
	"srem":                 rng(1, 1, 1),
	"sscan":                rng(1, 1, 1),
	"ssubscribe":           rng(1, -1, 1),
	"strlen":               rng(1, 1, 1),
	"substr":               rng(1, 1, 1),
	"sunion":               rng(1, -1, 1),
	"sunionstore":          rng(1, -1, 1),
	"sunsubscribe":         rng(1, -1, 1),
	"touch":                rng(1, -1, 1),
	"ttl":                  rng(1, 1, 1),
	"type":                 rng(1, 1, 1),
	"unlink":               rng(1, -1, 1),
	"watch":                rng(1, -1, 1),
	"xack":                 rng(1, 1, 1),
	"xadd":                 rng(1, 1, 1),
	"xautoclaim":           rng(1, 1, 1),
	"xclaim":               rng(1, 1, 1),
	"xdel":                 rng(1, 1, 1),
	"xlen":                 rng(1, 1, 1),
	"xpending":             rng(1, 1, 1),
	"xrange":               rng(1, 1, 1),
	"xrevrange":            rng(1, 1, 1),
	"xsetid":               rng(1, 1, 1),
	"xtrim":                rng(1, 1, 1),
	"zadd":                 rng(1, 1, 1),
	"zcard":                rng(1, 1, 1),
	"zcount":               rng(1, 1, 1),
	"zincrby":              rng(1, 1, 1),
	"zlexcount":            rng(1, 1, 1),
	"zmscore":              rng(1, 1, 1),
	"zpopmax":              rng(1, 1, 1),
	"zpopmin":              rng(1, 1, 1),
	"zrandmember":          rng(1, 1, 1),
	"zrange":               rng(1, 1, 1),
	"zrangebylex":          rng(1, 1, 1),
	"zrangebyscore":        rng(1, 1, 1),
	"zrangestore":          rng(1, 2, 1),
	"zrank":                rng(1, 1, 1),
	"zrem":                 rng(1, 1, 1),
	"zremrangebylex":       rng(1, 1, 1),
	"zremrangebyrank":      rng(1, 1, 1),
	"zremrangebyscore":     rng(1, 1, 1),
	"zrevrange":            rng(1, 1, 1),
	"zrevrangebylex":       rng(1, 1, 1),
	"zrevrangebyscore":     rng(1, 1, 1),
	"zrevrank":             rng(1, 1, 1),
	"zscan":                rng(1, 1, 1),
	"zscore":               rng(1, 1, 1),
	// Movable keys.
	"eval":              {find: numkeys(2, 3)},
	"eval_ro":           {find: numkeys(2, 3)},
	"evalsha":           {find: numkeys(2, 3)},
	"evalsha_ro":        {find: numkeys(2, 3)},
	"fcall":             {find: numkeys(2, 3)},
	"fcall_ro":          {find: numkeys(2, 3)},
	"blmpop":            {find: numkeys(2, 3)},
	"bzmpop":            {find: numkeys(2, 3)},
	"lmpop":             {find: numkeys(1, 2)},
	"zmpop":             {find: numkeys(1, 2)},
	"sintercard":        {find: numkeys(1, 2)},
	"zintercard":        {find: numkeys(1, 2)},
	"zdiff":             {find: numkeys(1, 2)},
	"zinter":            {find: numkeys(1, 2)},
	"zunion":            {find: numkeys(1, 2)},
	"zdiffstore":        {find: destNumkeys},
	"zinterstore":       {find: destNumkeys},
	"zunionstore":       {find: destNumkeys},
	"sort":              {find: sortKeys(true)},
	"sort_ro":           {find: sortKeys(false)},
	"georadius":         {find: geoStoreKeys},
	"georadiusbymember": {find: geoStoreKeys},
	"migrate":           {find: migrateKeys},
	"xread":             {find: streamKeys},
	"xreadgroup":        {find: streamKeys},
	// Containers whose subcommands take a key.
	"memory": {subs: map[string]keySpec{"USAGE": rng(2, 2, 1)}},
	"object": {subs: map[string]keySpec{"ENCODING": rng(2, 2, 1), "FREQ": rng(2, 2, 1),
		"IDLETIME": rng(2, 2, 1), "REFCOUNT": rng(2, 2, 1)}},
	"xgroup": {subs: map[string]keySpec{"CREATE": rng(2, 2, 1), "CREATECONSUMER": rng(2, 2, 1),
		"DELCONSUMER": rng(2, 2, 1), "DESTROY": rng(2, 2, 1), "SETID": rng(2, 2, 1)}},
	"xinfo": {subs: map[string]keySpec{"CONSUMERS": rng(2, 2, 1), "GROUPS": rng(2, 2, 1),
		"STREAM": rng(2, 2, 1)}},
}

// rng is the key range Redis' COMMAND reports.
func rng(first, last, step int) keySpec { return keySpec{first: first, last: last, step: step} }

// numkeys finds keys counted by a numkeys argument at args[at], starting at args[from].
func numkeys(at, from int) func([]int, [][]byte) []int {
	return func(dst []int, args [][]byte) []int {
		if at >= len(args) {
			return dst
		}
		n, ok := resp.ParseInt(args[at])
		if !ok || n <= 0 {
			return dst
		}
		for i := from; i < len(args) && int64(i-from) < n; i++ {
			dst = append(dst, i)
		}
		return dst
	}
}

// destNumkeys: ZUNIONSTORE dest numkeys key...
func destNumkeys(dst []int, args [][]byte) []int {
	if len(args) < 2 {
		return dst
	}
	return numkeys(2, 3)(append(dst, 1), args)
}

// sortKeys: SORT key [BY p] [LIMIT o c] [GET p...] [ASC|DESC] [ALPHA] [STORE dest].
func sortKeys(store bool) func([]int, [][]byte) []int {
	return func(dst []int, args [][]byte) []int {
		if len(args) < 2 {
			return dst
		}
		dst = append(dst, 1)
		for i := 2; i < len(args); i++ {
			switch {
			case equalFold(args[i], "LIMIT"):
				i += 2
			case equalFold(args[i], "GET"), equalFold(args[i], "BY"):
				i++
			case store && equalFold(args[i], "STORE") && i+1 < len(args):
				dst = append(dst, i+1)
				i++
			}
		}
		return dst
	}
}

// geoStoreKeys: GEORADIUS key ... [STORE dest] [STOREDIST dest].
func geoStoreKeys(dst []int, args [][]byte) []int {
	if len(args) < 2 {
		return dst
	}
	dst = append(dst, 1)
	for i := 2; i+1 < len(args); i++ {
		if equalFold(args[i], "STORE") || equalFold(args[i], "STOREDIST") {
			dst = append(dst, i+1)
			i++
		}
	}
	return dst
}

// migrateKeys: MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 u pw]
// [KEYS key...].
func migrateKeys(dst []int, args [][]byte) []int {
	if len(args) < 4 {
		return dst
	}
	if len(args[3]) > 0 {
		return append(dst, 3)
	}
	for i := 6; i < len(args); i++ {
		switch {
		case equalFold(args[i], "AUTH"):
			i++
		case equalFold(args[i], "AUTH2"):
			i += 2
		case equalFold(args[i], "KEYS"):
			for j := i + 1; j < len(args); j++ {
				dst = append(dst, j)
			}
			return dst
		}
	}
	return dst
}

// streamKeys: XREAD[GROUP] ... STREAMS key... id...: the first half after STREAMS.
func streamKeys(dst []int, args [][]byte) []int {
	for i := 1; i < len(args); i++ {
		switch {
		case equalFold(args[i], "GROUP"):
			i += 2
		case equalFold(args[i], "COUNT"), equalFold(args[i], "BLOCK"):
			i++
		case equalFold(args[i], "STREAMS"):
			rest := len(args) - i - 1
			if rest == 0 || rest%2 != 0 {
				return dst
			}
			for j := i + 1; j <= i+rest/2; j++ {
				dst = append(dst, j)
			}
			return dst
		}
	}
	return dst
}
