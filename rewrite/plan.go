package rewrite

import (
	"bytes"
	"maps"
	"slices"
	"strconv"
)

// Ref is one session key a command touches.
type Ref struct {
	Key  []byte
	Rule int
	DB   int // CurrentDB, or the DB a MOVE/COPY writes to
	// Owner, when not nil, is the owner the key has after the command if it succeeds (HSET of
	// the owner field): the script need not read it back.
	Owner []byte
	// KeepsTTL says the command cannot change the key's TTL (hash writes): when the owner is
	// unchanged too, the script has nothing to update.
	KeepsTTL bool
}

// CurrentDB marks a Ref in the client's own DB.
const CurrentDB = -1

// MaxArgs is the most arguments a rewritten command may have: Lua's unpack() limit is near
// 8000. Longer session writes are forwarded untouched and left to repair.
const MaxArgs = 7000

// Planner returns the session keys a command writes, appended to dst, or dst unchanged when
// the command leaves every index untouched or its arity is wrong (Redis must then answer it
// with its own error, so it is forwarded untouched).
type Planner func(dst []Ref, args [][]byte) []Ref

// plan is the shape of a planner before it is bound to a schema.
type plan func(s *Schema, dst []Ref, args [][]byte) []Ref

// arity mirrors Redis' command arity: n > 0 exactly n arguments, n < 0 at least -n.
func arity(args [][]byte, n int) bool {
	if n > 0 {
		return len(args) == n
	}
	return len(args) >= -n
}

// planners lists every command that can create, re-own, re-TTL, rename or delete a session key.
// SWAPDB, FLUSHDB and FLUSHALL need no rewrite: the index and bookkeeping keys live in the same
// DB as their sessions and move or vanish with them.
var planners = map[string]plan{
	// Hash sessions: only writes that touch the owner field matter.
	"HSET":         hashFields(-4, 2, 2),
	"HMSET":        hashFields(-4, 2, 2),
	"HSETNX":       hashFields(4, 2, 0),
	"HINCRBY":      hashFields(4, 2, 0),
	"HINCRBYFLOAT": hashFields(4, 2, 0),
	"HDEL":         hashFields(-3, 2, 1),
	// Whole-value writes replace a hash session or re-own a JSON one; TTL writes move deadlines.
	"SET":       firstKey(-3),
	"SETEX":     firstKey(4),
	"PSETEX":    firstKey(4),
	"SETNX":     firstKey(3),
	"GETSET":    firstKey(3),
	"GETDEL":    firstKey(2),
	"GETEX":     firstKey(-2),
	"APPEND":    jsonOnly(3),
	"SETRANGE":  jsonOnly(4),
	"EXPIRE":    firstKey(-3),
	"PEXPIRE":   firstKey(-3),
	"EXPIREAT":  firstKey(-3),
	"PEXPIREAT": firstKey(-3),
	"PERSIST":   firstKey(2),
	"RESTORE":   firstKey(-4),
	// RESTORE-ASKING is RESTORE for cluster migrations; a standalone Redis runs it alike.
	"RESTORE-ASKING": firstKey(-4),
	"DEL":            allKeys(-2, 1),
	"UNLINK":         allKeys(-2, 1),
	"MSET":           allKeys(-3, 2),
	"MSETNX":         allKeys(-3, 2),
	"RENAME":         twoKeys(3),
	"RENAMENX":       twoKeys(3),
	"MOVE":           planMove,
	"COPY":           planCopy,
	"MIGRATE":        planMigrate,
	// Commands that overwrite their destination whatever its type, or edit strings in place.
	"SUNIONSTORE":       firstKey(-3),
	"SINTERSTORE":       firstKey(-3),
	"SDIFFSTORE":        firstKey(-3),
	"ZUNIONSTORE":       firstKey(-4),
	"ZINTERSTORE":       firstKey(-4),
	"ZDIFFSTORE":        firstKey(-4),
	"ZRANGESTORE":       firstKey(-5),
	"GEOSEARCHSTORE":    firstKey(-8),
	"BITOP":             keyAt(-4, 2),
	"SORT":              optionKey(-2, "STORE"),
	"GEORADIUS":         optionKey(-6, "STORE", "STOREDIST"),
	"GEORADIUSBYMEMBER": optionKey(-5, "STORE", "STOREDIST"),
	"SETBIT":            jsonOnly(4),
	"BITFIELD":          bitfield,
}

// PlannedCommands lists the commands that have a planner (upper case, sorted).
func PlannedCommands() []string {
	return slices.Sorted(maps.Keys(planners))
}

// PlanFunc plans a command under any schema: a proxy whose rules may change (a reload) plans
// each batch with the schema that batch runs under.
type PlanFunc func(s *Schema, dst []Ref, args [][]byte) []Ref

// PlanOf returns the PlanFunc for a command name in any case, or nil if the command never
// writes session keys (whatever the rules).
func PlanOf(name string) PlanFunc {
	if p := planners[string(bytes.ToUpper([]byte(name)))]; p != nil {
		return PlanFunc(p)
	}
	return nil
}

// Planner returns the planner for a command name in any case, or nil if the command never
// writes session keys.
func (s *Schema) Planner(name string) Planner {
	p := planners[string(bytes.ToUpper([]byte(name)))]
	if p == nil {
		return nil
	}
	return func(dst []Ref, args [][]byte) []Ref { return p(s, dst, args) }
}

// ref appends key if a rule owns it.
func (s *Schema) ref(dst []Ref, key []byte, db int) []Ref {
	if r := s.Match(key); r >= 0 {
		dst = append(dst, Ref{Key: key, Rule: r, DB: db})
	}
	return dst
}

// hashFields plans hash writes: fields start at args[from] every step args (0: one field).
func hashFields(n, from, step int) plan {
	return func(s *Schema, dst []Ref, args [][]byte) []Ref {
		if !arity(args, n) || (step == 2 && len(args)%2 != 0) {
			return dst
		}
		r := s.Match(args[1])
		if r < 0 || s.Rules[r].Field == "" {
			return dst // JSON sessions are strings: a hash command cannot change their owner
		}
		field := s.Rules[r].Field
		last, stride := len(args), step
		if step == 0 {
			last, stride = from+1, 1
		}
		found := false
		var owner []byte
		for i := from; i < last; i += stride {
			if string(args[i]) == field {
				found = true
				if step == 2 { // HSET/HMSET set it unconditionally; the last pair wins
					owner = args[i+1]
				}
			}
		}
		if !found {
			return dst
		}
		return append(dst, Ref{Key: args[1], Rule: r, DB: CurrentDB, Owner: owner, KeepsTTL: true})
	}
}

func firstKey(n int) plan { return keyAt(n, 1) }

// keyAt plans commands that write the key at args[i].
func keyAt(n, i int) plan {
	return func(s *Schema, dst []Ref, args [][]byte) []Ref {
		if !arity(args, n) {
			return dst
		}
		return s.ref(dst, args[i], CurrentDB)
	}
}

// optionKey plans commands that write the key following one of the options (SORT ... STORE k).
func optionKey(n int, opts ...string) plan {
	return func(s *Schema, dst []Ref, args [][]byte) []Ref {
		if !arity(args, n) {
			return dst
		}
		for i := 2; i+1 < len(args); i++ {
			for _, o := range opts {
				if bytes.EqualFold(args[i], []byte(o)) {
					dst = s.ref(dst, args[i+1], CurrentDB)
				}
			}
		}
		return dst
	}
}

// planMigrate: MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw]
// [KEYS k...] deletes the local keys unless COPY is given.
func planMigrate(s *Schema, dst []Ref, args [][]byte) []Ref {
	if !arity(args, -6) {
		return dst
	}
	var keys [][]byte
	if len(args[3]) > 0 {
		keys = append(keys, args[3])
	}
	for i := 6; i < len(args); i++ {
		switch a := args[i]; {
		case bytes.EqualFold(a, []byte("COPY")):
			return dst
		case bytes.EqualFold(a, []byte("AUTH")):
			i++
		case bytes.EqualFold(a, []byte("AUTH2")):
			i += 2
		case bytes.EqualFold(a, []byte("KEYS")):
			keys = append(keys, args[i+1:]...)
			i = len(args)
		}
	}
	for _, k := range keys {
		dst = s.ref(dst, k, CurrentDB)
	}
	return dst
}

// jsonOnly plans in-place string edits, which only matter to JSON sessions.
func jsonOnly(n int) plan {
	return func(s *Schema, dst []Ref, args [][]byte) []Ref {
		if !arity(args, n) {
			return dst
		}
		if r := s.Match(args[1]); r >= 0 && s.Rules[r].JSONPath != "" {
			return append(dst, Ref{Key: args[1], Rule: r, DB: CurrentDB})
		}
		return dst
	}
}

// bitfield plans a BITFIELD that writes (a SET or INCRBY among its operations) to a JSON
// session. One that only reads stays a plain command: its reply then keeps integers that a
// script's Lua numbers would round (i64 beyond 2^53).
func bitfield(s *Schema, dst []Ref, args [][]byte) []Ref {
	for i := 2; i < len(args); i++ {
		if op := args[i]; bytes.EqualFold(op, []byte("SET")) || bytes.EqualFold(op, []byte("INCRBY")) {
			return bitfieldWrite(s, dst, args)
		}
	}
	return dst
}

var bitfieldWrite = jsonOnly(-2)

// allKeys plans commands whose keys are every step-th argument from args[1].
func allKeys(n, step int) plan {
	return func(s *Schema, dst []Ref, args [][]byte) []Ref {
		if !arity(args, n) || (step == 2 && len(args)%2 != 1) {
			return dst
		}
		for i := 1; i < len(args); i += step {
			dst = s.ref(dst, args[i], CurrentDB)
		}
		return dst
	}
}

func twoKeys(n int) plan {
	return func(s *Schema, dst []Ref, args [][]byte) []Ref {
		if !arity(args, n) {
			return dst
		}
		dst = s.ref(dst, args[1], CurrentDB)
		return s.ref(dst, args[2], CurrentDB)
	}
}

// planMove: MOVE key db touches key here and in db.
func planMove(s *Schema, dst []Ref, args [][]byte) []Ref {
	if !arity(args, 3) {
		return dst
	}
	start := len(dst)
	dst = s.ref(dst, args[1], CurrentDB)
	if len(dst) == start {
		return dst
	}
	if db, ok := dbIndex(args[2]); ok {
		dst = append(dst, Ref{Key: args[1], Rule: dst[start].Rule, DB: db})
	}
	return dst
}

// planCopy: COPY src dst [DB db] [REPLACE] writes dst, here or in db.
func planCopy(s *Schema, dst []Ref, args [][]byte) []Ref {
	if !arity(args, -3) {
		return dst
	}
	db := CurrentDB
	for i := 3; i < len(args); i++ {
		if bytes.EqualFold(args[i], []byte("DB")) && i+1 < len(args) {
			d, ok := dbIndex(args[i+1])
			if !ok {
				return dst // Redis rejects it; nothing is written
			}
			db = d
			i++
		}
	}
	return s.ref(dst, args[2], db)
}

// dbIndex parses a DB number the way Redis accepts it (no sign, no leading zeros).
func dbIndex(b []byte) (int, bool) {
	n, err := strconv.Atoi(string(b))
	if err != nil || n < 0 || strconv.Itoa(n) != string(b) {
		return 0, false
	}
	return n, true
}

// AppendApply appends the rewritten command: the apply script (by SHA, or by body where a
// NOSCRIPT could not be retried, e.g. inside MULTI) with the refs as KEYS and the original
// command at the end of ARGV. Per ref, ARGV carries a descriptor "<rule>[@<db>][k]" and an
// owner hint ("=<uid>" or "").
func (s *Schema) AppendApply(dst []byte, sc *Script, byBody bool, refs []Ref, args [][]byte) []byte {
	return s.appendApply(dst, sc, byBody, refs, nil, args)
}

// AppendClusterApply is AppendApply for a Redis Cluster: sc is Scripts.Cluster.Apply, every ref
// is in the current DB and in one slot, whose tag is tag; the slot's bookkeeping keys follow
// the refs in KEYS.
func (s *Schema) AppendClusterApply(dst []byte, sc *Script, byBody bool, refs []Ref, tag string, args [][]byte) []byte {
	book := s.SlotKeys(tag)
	return s.appendApply(dst, sc, byBody, refs, book[:], args)
}

func (s *Schema) appendApply(dst []byte, sc *Script, byBody bool, refs []Ref, extra []string, args [][]byte) []byte {
	n := len(refs)
	dst = appendHeader(dst, '*', 3+n+len(extra)+1+2*n+len(args))
	if byBody {
		dst = appendBulk(dst, []byte("EVAL"))
		dst = appendBulkString(dst, sc.Body)
	} else {
		dst = appendBulk(dst, []byte("EVALSHA"))
		dst = appendBulkString(dst, sc.SHA)
	}
	dst = appendBulkInt(dst, n+len(extra))
	for _, r := range refs {
		dst = appendBulk(dst, r.Key)
	}
	for _, k := range extra {
		dst = appendBulkString(dst, k)
	}
	dst = appendBulkInt(dst, n)
	dst = appendRefs(dst, refs)
	for _, a := range args {
		dst = appendBulk(dst, a)
	}
	return dst
}

// Writes is one session write of a run merged into an apply_many call.
type Writes struct {
	Refs []Ref
	Args [][]byte
}

// AppendApplyMany appends one apply_many call (by SHA) for a run of session writes of one
// client. Its reply is an array with one element per write, each exactly the plain
// command's reply. A write that only re-sets a hash session's owner field takes the script's
// fast form (its arguments without the key, described by two bytes of the run's shape); the
// rest the general one (argc, refs, descriptor and hint pairs, arguments).
func (s *Schema) AppendApplyMany(dst []byte, sc *Script, run []Writes) []byte {
	keys, argv := 0, 1
	for _, w := range run {
		keys += len(w.Refs)
		if s.fastOwner(w) > 0 {
			argv += len(w.Args) - 1
		} else {
			argv += 2 + 2*len(w.Refs) + len(w.Args)
		}
	}
	dst = appendHeader(dst, '*', 3+keys+argv)
	dst = appendBulk(dst, []byte("EVALSHA"))
	dst = appendBulkString(dst, sc.SHA)
	dst = appendBulkInt(dst, keys)
	for _, w := range run {
		for _, r := range w.Refs {
			dst = appendBulk(dst, r.Key)
		}
	}
	dst = appendHeader(dst, '$', 2*len(run))
	for _, w := range run {
		if b := s.fastOwner(w); b > 0 {
			dst = append(dst, byte(len(w.Args)-1), byte(b))
		} else {
			dst = append(dst, 0, 0)
		}
	}
	dst = append(dst, '\r', '\n')
	for _, w := range run {
		if s.fastOwner(w) > 0 {
			dst = appendBulk(dst, w.Args[0])
			for _, a := range w.Args[2:] {
				dst = appendBulk(dst, a)
			}
			continue
		}
		dst = appendBulkInt(dst, len(w.Args))
		dst = appendBulkInt(dst, len(w.Refs))
		dst = appendRefs(dst, w.Refs)
		for _, a := range w.Args {
			dst = appendBulk(dst, a)
		}
	}
	return dst
}

// fastOwner returns, for a write that apply_many may run in its fast form, the index in its
// arguments of the owner value it sets (the last owner field's value, as Redis keeps the last
// pair); 0 for any other write. The fast form is for one key in the current DB whose owner the
// write sets and whose TTL it keeps, under a layout without deadline scores (a zset index must
// see the TTL each time), with at most 256 arguments (the shape holds counts in bytes).
func (s *Schema) fastOwner(w Writes) int {
	if len(w.Refs) != 1 || len(w.Args) > 256 {
		return 0
	}
	r := w.Refs[0]
	rule := &s.Rules[r.Rule]
	if r.DB != CurrentDB || !r.KeepsTTL || r.Owner == nil || rule.Layout == LayoutZSet {
		return 0
	}
	for i := len(w.Args) - 2; i >= 2; i -= 2 { // HSET/HMSET: field-value pairs from args[2]
		if string(w.Args[i]) == rule.Field {
			return i + 1
		}
	}
	return 0
}

// appendRefs appends the (descriptor, owner hint) pair of each ref.
func appendRefs(dst []byte, refs []Ref) []byte {
	var desc [40]byte
	for _, r := range refs {
		d := strconv.AppendInt(desc[:0], int64(r.Rule+1), 10)
		if r.DB != CurrentDB {
			d = append(d, '@')
			d = strconv.AppendInt(d, int64(r.DB), 10)
		}
		if r.KeepsTTL {
			d = append(d, 'k')
		}
		dst = appendBulk(dst, d)
		if r.Owner != nil {
			dst = appendHeader(dst, '$', len(r.Owner)+1)
			dst = append(dst, '=')
			dst = append(dst, r.Owner...)
			dst = append(dst, '\r', '\n')
		} else {
			dst = appendBulk(dst, nil)
		}
	}
	return dst
}

func appendHeader(dst []byte, t byte, n int) []byte {
	dst = append(dst, t)
	dst = strconv.AppendInt(dst, int64(n), 10)
	return append(dst, '\r', '\n')
}

func appendBulk(dst, b []byte) []byte {
	dst = appendHeader(dst, '$', len(b))
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}

func appendBulkString(dst []byte, s string) []byte {
	dst = appendHeader(dst, '$', len(s))
	dst = append(dst, s...)
	return append(dst, '\r', '\n')
}

func appendBulkInt(dst []byte, n int) []byte {
	var b [20]byte
	return appendBulk(dst, strconv.AppendInt(b[:0], int64(n), 10))
}
