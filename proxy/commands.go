package proxy

import (
	"bytes"

	"github.com/tidwall/redcon"

	"github.com/sessionproxy/sessionproxy/rewrite"
)

// route says where a command runs.
type route uint8

const (
	routeShared    route = iota // over a shared, coalescing upstream connection
	routeLocal                  // answered by the proxy (connection state it keeps itself)
	routeDedicated              // needs its own upstream connection from now on
)

// cmdSpec is one row of the command table.
type cmdSpec struct {
	name  string // lower-case, as Redis names it; also the metrics label
	route route
	// classify refines the route from the arguments (subcommands, options); nil = use route.
	classify func(args [][]byte) route
	// local answers a routeLocal command; it runs after every earlier reply of the batch is written.
	local func(c *client, args [][]byte)
	// plan finds the session keys a data command writes (nil: it never writes any); such
	// writes are rewritten into the apply script.
	plan rewrite.PlanFunc
	// sessions marks SESSIONS.LIST/COUNT/REVOKE, rewritten into the sessions script.
	sessions bool
	// script marks a client's script call (EVAL, FCALL...): it may run until killed, so no
	// other client's command may wait behind it on a shared connection.
	script bool
	// On a client's own upstream connection (dedicated.go): sendDedicated sends the command its
	// own way (the proxy's answers as an EVAL echo, in order with Redis' replies) and reports
	// whether it did; drainFirst waits until every earlier command is answered (the command
	// reads Redis itself); track follows the connection state the command changes and returns
	// how many replies it brings beyond one.
	sendDedicated func(d *dedicated, cmd redcon.Command) bool
	drainFirst    bool
	track         func(d *dedicated, args [][]byte) int64
	keys          keySpec // where its keys are (keys.go)
	idx           int     // position in the table: index of the command's metrics counter
	container     bool    // CLIENT LIST's cmd= names its subcommand too (containers)
}

// keyPositions appends the indexes of the command's keys in args to dst.
func (s *cmdSpec) keyPositions(dst []int, args [][]byte) []int { return s.keys.positions(dst, args) }

// redisCommands lists redis-server 7.0's top-level commands (COMMAND LIST). Every one of them
// passes through unless a family file registers special handling; unknown names pass through too
// and count as "other", so the table bounds the metrics labels without filtering anything.
var redisCommands = []string{
	"acl", "append", "asking", "auth", "bgrewriteaof", "bgsave", "bitcount", "bitfield", "bitfield_ro",
	"bitop", "bitpos", "blmove", "blmpop", "blpop", "brpop", "brpoplpush", "bzmpop", "bzpopmax",
	"bzpopmin", "client", "cluster", "command", "config", "copy", "dbsize", "debug", "decr", "decrby",
	"del", "discard", "dump", "echo", "eval", "eval_ro", "evalsha", "evalsha_ro", "exec", "exists",
	"expire", "expireat", "expiretime", "failover", "fcall", "fcall_ro", "flushall", "flushdb",
	"function", "geoadd", "geodist", "geohash", "geopos", "georadius", "georadius_ro",
	"georadiusbymember", "georadiusbymember_ro", "geosearch", "geosearchstore", "get", "getbit",
	"getdel", "getex", "getrange", "getset", "hdel", "hello", "hexists", "hget", "hgetall", "hincrby",
	"hincrbyfloat", "hkeys", "hlen", "hmget", "hmset", "hrandfield", "hscan", "hset", "hsetnx",
	"hstrlen", "hvals", "incr", "incrby", "incrbyfloat", "info", "keys", "lastsave", "latency", "lcs",
	"lindex", "linsert", "llen", "lmove", "lmpop", "lolwut", "lpop", "lpos", "lpush", "lpushx",
	"lrange", "lrem", "lset", "ltrim", "memory", "mget", "migrate", "module", "monitor", "move",
	"mset", "msetnx", "multi", "object", "persist", "pexpire", "pexpireat", "pexpiretime", "pfadd",
	"pfcount", "pfdebug", "pfmerge", "pfselftest", "ping", "psetex", "psubscribe", "psync", "pttl",
	"publish", "pubsub", "punsubscribe", "quit", "randomkey", "readonly", "readwrite", "rename",
	"renamenx", "replconf", "replicaof", "reset", "restore", "restore-asking", "role", "rpop",
	"rpoplpush", "rpush", "rpushx", "sadd", "save", "scan", "scard", "script", "sdiff", "sdiffstore",
	"select", "set", "setbit", "setex", "setnx", "setrange", "shutdown", "sinter", "sintercard",
	"sinterstore", "sismember", "slaveof", "slowlog", "smembers", "smismember", "smove", "sort",
	"sort_ro", "spop", "spublish", "srandmember", "srem", "sscan", "ssubscribe", "strlen",
	"subscribe", "substr", "sunion", "sunionstore", "sunsubscribe", "swapdb", "sync", "time", "touch",
	"ttl", "type", "unlink", "unsubscribe", "unwatch", "wait", "watch", "xack", "xadd", "xautoclaim",
	"xclaim", "xdel", "xgroup", "xinfo", "xlen", "xpending", "xrange", "xread", "xreadgroup",
	"xrevrange", "xsetid", "xtrim", "zadd", "zcard", "zcount", "zdiff", "zdiffstore", "zincrby",
	"zinter", "zintercard", "zinterstore", "zlexcount", "zmpop", "zmscore", "zpopmax", "zpopmin",
	"zrandmember", "zrange", "zrangebylex", "zrangebyscore", "zrangestore", "zrank", "zrem",
	"zremrangebylex", "zremrangebyrank", "zremrangebyscore", "zrevrange", "zrevrangebylex",
	"zrevrangebyscore", "zrevrank", "zscan", "zscore", "zunion", "zunionstore",
}

// otherCommand is the metrics label for names not in the table.
const otherCommand = "other"

// maxCmdName bounds the names looked up in the table; longer ones cannot match.
const maxCmdName = 24

// commandTable maps an upper-case command name to its spec.
type commandTable struct {
	byName map[string]*cmdSpec
	specs  []*cmdSpec // by idx; the last one is "other"
	other  *cmdSpec
	// byShape holds the specs by name length and first letter (A-Z, then anything else), for
	// lookup: one to four names to compare, where the map hashed a case-folded copy (3.5% of
	// the proxy's CPU at GET 50/16).
	byShape [maxCmdName + 1][27][]shaped
}

// shaped is one entry of commandTable.byShape.
type shaped struct {
	upper string // the upper-case name
	spec  *cmdSpec
}

// shapeOf is a name's first-letter bucket in commandTable.byShape.
func shapeOf(c byte) int {
	c |= 0x20 // lower case, for letters
	if c < 'a' || c > 'z' {
		return 26
	}
	return int(c - 'a')
}

// family is what a command-family file registers: the specs that differ from plain passthrough.
type family []cmdSpec

// newCommandTable builds the table: plain passthrough rows for every Redis command, then the
// families' rows on top.
func newCommandTable(families ...family) *commandTable {
	t := &commandTable{byName: make(map[string]*cmdSpec)}
	add := func(s cmdSpec) {
		s.keys = keySpecs[s.name]
		s.container = containers[s.name]
		key := string(bytes.ToUpper([]byte(s.name)))
		if old, ok := t.byName[key]; ok {
			s.idx = old.idx
			*old = s
			return
		}
		s.idx = len(t.specs)
		sp := &s
		t.specs = append(t.specs, sp)
		t.byName[key] = sp
	}
	for _, n := range redisCommands {
		add(cmdSpec{name: n})
	}
	for _, f := range families {
		for _, s := range f {
			add(s)
		}
	}
	t.other = &cmdSpec{name: otherCommand, idx: len(t.specs)}
	t.specs = append(t.specs, t.other)
	for name, sp := range t.byName {
		if len(name) > 0 && len(name) <= maxCmdName {
			b := &t.byShape[len(name)][shapeOf(name[0])]
			*b = append(*b, shaped{name, sp})
		}
	}
	return t
}

// lookup finds the spec for a command name in any letter case without allocating.
func (t *commandTable) lookup(name []byte) *cmdSpec {
	if len(name) == 0 || len(name) > maxCmdName {
		return t.other
	}
	for _, e := range t.byShape[len(name)][shapeOf(name[0])] {
		if equalFold(name, e.upper) {
			return e.spec
		}
	}
	return t.other
}

// routeOf is the route of one command with its arguments.
func (s *cmdSpec) routeOf(args [][]byte) route {
	if s.classify != nil {
		return s.classify(args)
	}
	return s.route
}

// equalFold reports whether b equals the upper-case ASCII word w in any letter case.
func equalFold(b []byte, w string) bool {
	if len(b) != len(w) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != w[i] {
			return false
		}
	}
	return true
}
