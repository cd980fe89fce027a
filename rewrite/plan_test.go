package rewrite

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// args splits a command line into arguments; two single quotes stand for an empty one.
func args(line string) [][]byte {
	var out [][]byte
	for _, w := range strings.Fields(line) {
		if w == "''" {
			w = ""
		}
		out = append(out, []byte(w))
	}
	return out
}

// showRefs renders refs as "key#rule[@db][=owner][k]", space separated; "-" for none.
func showRefs(refs []Ref) string {
	if len(refs) == 0 {
		return "-"
	}
	parts := make([]string, len(refs))
	for i, r := range refs {
		s := fmt.Sprintf("%s#%d", r.Key, r.Rule)
		if r.DB != CurrentDB {
			s += fmt.Sprintf("@%d", r.DB)
		}
		if r.Owner != nil {
			s += "=" + string(r.Owner)
		}
		if r.KeepsTTL {
			s += "k"
		}
		parts[i] = s
	}
	return strings.Join(parts, " ")
}

// planCases: every planner, with the keys, rules, DBs and hints it must find. Rules of the
// test schema: 0 session:* (hash, userid), 1 sess:* (JSON), 2 zsess:* (hash, uid, zset),
// 3 gsess:* (hash, uid, global-zset).
var planCases = []struct{ cmd, want string }{
	// Hash writes: only the owner field matters; the last HSET pair wins; JSON rules never.
	{"HSET session:a userid 1", "session:a#0=1k"},
	{"HSET session:a name x userid 2", "session:a#0=2k"},
	{"HSET session:a userid 1 userid 2", "session:a#0=2k"},
	{"HSET session:a userid ''", "session:a#0=k"},
	{"HSET session:a name x", "-"},
	{"HSET session:a name userid", "-"},   // userid is a value here
	{"HSET session:a USERID 1", "-"},      // field names are case sensitive
	{"HSET session:a userid", "-"},        // arity: Redis answers
	{"HSET session:a userid 1 name", "-"}, // odd field/value list: Redis answers
	{"HSET session:a", "-"},
	{"HSET", "-"},
	{"hset session:a userid 1", "session:a#0=1k"},
	{"HsEt session:a userid 1", "session:a#0=1k"},
	{"HSET sess:a passport.user 1", "-"}, // JSON session: a hash command cannot re-own it
	{"HSET sess:a userid 1", "-"},
	{"HSET zsess:a uid 3", "zsess:a#2=3k"},
	{"HSET zsess:a userid 3", "-"}, // the scored rule's field is uid
	{"HSET gsess:a uid 3", "gsess:a#3=3k"},
	{"HSET other userid 1", "-"},
	{"HMSET session:a userid 1 name x", "session:a#0=1k"},
	{"HMSET session:a name x", "-"},
	{"HMSET session:a userid", "-"},
	{"HMSET sess:a userid 1", "-"},
	{"HSETNX session:a userid 1", "session:a#0k"}, // may not apply: no owner hint
	{"HSETNX session:a name userid", "-"},
	{"HSETNX session:a userid", "-"},
	{"HSETNX session:a userid 1 2", "-"},
	{"HSETNX sess:a passport 1", "-"},
	{"HINCRBY session:a userid 1", "session:a#0k"},
	{"HINCRBY session:a n 1", "-"},
	{"HINCRBY session:a userid", "-"},
	{"HINCRBY gsess:a uid 1", "gsess:a#3k"},
	{"HINCRBYFLOAT session:a userid 1.5", "session:a#0k"},
	{"HINCRBYFLOAT session:a n 1.5", "-"},
	{"HINCRBYFLOAT session:a userid 1 2", "-"},
	{"HDEL session:a userid", "session:a#0k"},
	{"HDEL session:a name x userid", "session:a#0k"},
	{"HDEL session:a name", "-"},
	{"HDEL session:a", "-"},
	{"HDEL zsess:a uid", "zsess:a#2k"},
	{"HDEL sess:a passport", "-"},

	// Whole-value and TTL writes: the first key, whatever the rule.
	{"SET session:a x", "session:a#0"},
	{"SET sess:a {} EX 10", "sess:a#1"},
	{"SET zsess:a x NX GET", "zsess:a#2"},
	{"SET other x", "-"},
	{"SET session:a", "-"},
	{"set gsess:a x", "gsess:a#3"},
	{"SETEX sess:a 10 x", "sess:a#1"},
	{"SETEX sess:a 10", "-"},
	{"SETEX sess:a 10 x y", "-"},
	{"PSETEX sess:a 10 x", "sess:a#1"},
	{"PSETEX sess:a 10", "-"},
	{"SETNX sess:a x", "sess:a#1"},
	{"SETNX sess:a", "-"},
	{"SETNX sess:a x y", "-"},
	{"GETSET sess:a x", "sess:a#1"},
	{"GETSET sess:a", "-"},
	{"GETDEL session:a", "session:a#0"},
	{"GETDEL session:a x", "-"},
	{"GETDEL", "-"},
	{"GETEX sess:a", "sess:a#1"},
	{"GETEX sess:a PERSIST", "sess:a#1"},
	{"GETEX sess:a EX 10 PX 5", "sess:a#1"}, // Redis answers the syntax error from the script
	{"GETEX", "-"},
	{"APPEND sess:a x", "sess:a#1"},
	{"APPEND session:a x", "-"}, // a hash session cannot become owned by appending
	{"APPEND sess:a", "-"},
	{"APPEND sess:a x y", "-"},
	{"SETRANGE sess:a 0 x", "sess:a#1"},
	{"SETRANGE zsess:a 0 x", "-"},
	{"SETRANGE sess:a 0", "-"},
	{"EXPIRE session:a 10", "session:a#0"},
	{"EXPIRE session:a 10 NX", "session:a#0"},
	{"EXPIRE session:a", "-"},
	{"EXPIRE other 10", "-"},
	{"PEXPIRE zsess:a 10 GT", "zsess:a#2"},
	{"PEXPIRE zsess:a", "-"},
	{"EXPIREAT gsess:a 1", "gsess:a#3"},
	{"EXPIREAT gsess:a", "-"},
	{"PEXPIREAT sess:a 1 LT", "sess:a#1"},
	{"PEXPIREAT sess:a", "-"},
	{"PERSIST session:a", "session:a#0"},
	{"PERSIST session:a x", "-"},
	{"PERSIST", "-"},
	{"RESTORE session:a 0 payload", "session:a#0"},
	{"RESTORE session:a 0 payload REPLACE ABSTTL", "session:a#0"},
	{"RESTORE session:a 0", "-"},
	{"RESTORE other 0 payload", "-"},

	// Multi-key writes: every key a rule owns, in order, duplicates kept.
	{"DEL session:a other sess:b zsess:c gsess:d", "session:a#0 sess:b#1 zsess:c#2 gsess:d#3"},
	{"DEL session:a session:a", "session:a#0 session:a#0"},
	{"DEL other", "-"},
	{"DEL", "-"},
	{"UNLINK sess:b session:a", "sess:b#1 session:a#0"},
	{"UNLINK", "-"},
	{"MSET session:a x other y sess:b z", "session:a#0 sess:b#1"},
	{"MSET other session:a", "-"}, // session:a is a value here
	{"MSET session:a x other", "-"},
	{"MSET session:a", "-"},
	{"MSETNX sess:b x zsess:c y", "sess:b#1 zsess:c#2"},
	{"MSETNX sess:b x zsess:c", "-"},
	{"RENAME session:a session:b", "session:a#0 session:b#0"},
	{"RENAME other session:b", "session:b#0"},
	{"RENAME session:a other", "session:a#0"},
	{"RENAME zsess:a gsess:a", "zsess:a#2 gsess:a#3"},
	{"RENAME a b", "-"},
	{"RENAME session:a", "-"},
	{"RENAME session:a session:b x", "-"},
	{"RENAMENX session:a sess:b", "session:a#0 sess:b#1"},
	{"RENAMENX session:a", "-"},

	// Other DBs: MOVE touches the key here and in the target; COPY writes its target there.
	{"MOVE session:a 1", "session:a#0 session:a#0@1"},
	{"MOVE sess:a 15", "sess:a#1 sess:a#1@15"},
	{"MOVE session:a 0", "session:a#0 session:a#0@0"}, // Redis refuses; the script relays it
	{"MOVE session:a x", "session:a#0"},               // not a DB: Redis refuses
	{"MOVE session:a 01", "session:a#0"},
	{"MOVE session:a -1", "session:a#0"},
	{"MOVE session:a +1", "session:a#0"},
	{"MOVE other 1", "-"},
	{"MOVE session:a", "-"},
	{"MOVE session:a 1 2", "-"},
	{"COPY session:a session:b", "session:b#0"},
	{"COPY session:a other", "-"},
	{"COPY other session:b DB 2", "session:b#0@2"},
	{"COPY other session:b db 2", "session:b#0@2"},
	{"COPY other session:b REPLACE DB 3", "session:b#0@3"},
	{"COPY other session:b DB 3 REPLACE", "session:b#0@3"},
	{"COPY other session:b DB 1 DB 2", "session:b#0@2"}, // the last DB wins, as in Redis
	{"COPY other session:b DB", "session:b#0"},          // Redis: syntax error
	{"COPY other session:b DB x", "-"},                  // Redis: not an integer
	{"COPY other session:b DB -1", "-"},
	{"COPY other session:b DB 01", "-"},
	{"COPY other session:b REPLACE", "session:b#0"},
	{"COPY other", "-"},

	// Commands that never write a session's owner or TTL have no planner.
}

func TestPlanners(t *testing.T) {
	s := testSchema(t)
	for _, tc := range planCases {
		t.Run(tc.cmd, func(t *testing.T) {
			a := args(tc.cmd)
			p := s.Planner(string(a[0]))
			if p == nil {
				t.Fatalf("no planner for %s", a[0])
			}
			before := cloneArgs(a)
			got := p(nil, a)
			if showRefs(got) != tc.want {
				t.Errorf("refs %s, want %s", showRefs(got), tc.want)
			}
			if !equalArgs(a, before) {
				t.Errorf("planner changed its arguments")
			}
			// Appending keeps what dst held.
			pre := []Ref{{Key: []byte("x"), Rule: 9, DB: 7}}
			if got2 := p(pre, a); len(got2) != 1+len(got) || got2[0].Rule != 9 || showRefs(got2[1:]) != showRefs(got) {
				t.Errorf("appending to dst: %s", showRefs(got2))
			}
			checkRefs(t, s, a, got)
		})
	}
}

func TestPlannerNames(t *testing.T) {
	s := testSchema(t)
	planned := map[string]bool{}
	for _, tc := range planCases {
		planned[strings.ToUpper(string(args(tc.cmd)[0]))] = true
	}
	for name := range planners {
		if !planned[name] {
			t.Errorf("planner %s has no case in planCases", name)
		}
		if _, ok := redisArity[name]; !ok {
			t.Errorf("planner %s has no Redis arity in redisArity", name)
		}
	}
	for _, name := range []string{"GET", "get", "HGET", "SWAPDB", "FLUSHDB", "FLUSHALL", "SELECT", "EVAL",
		"SESSIONS.LIST", "", "HSETX", "HSET ", "SUNIONSTORE"} {
		if s.Planner(name) != nil {
			t.Errorf("Planner(%q) is not nil", name)
		}
	}
	for _, name := range []string{"hset", "Hset", "HSET", "del", "Copy", "pexpireat"} {
		if s.Planner(name) == nil {
			t.Errorf("Planner(%q) is nil", name)
		}
	}
}

func cloneArgs(a [][]byte) [][]byte {
	out := make([][]byte, len(a))
	for i := range a {
		out[i] = bytes.Clone(a[i])
	}
	return out
}

func equalArgs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// redisArity is COMMAND INFO's arity of each planned command on redis-server 7.0 (n > 0:
// exactly n arguments; n < 0: at least -n), independent of the planners' own table.
var redisArity = map[string]int{
	"HSET": -4, "HMSET": -4, "HSETNX": 4, "HINCRBY": 4, "HINCRBYFLOAT": 4, "HDEL": -3,
	"SET": -3, "SETEX": 4, "PSETEX": 4, "SETNX": 3, "GETSET": 3, "GETDEL": 2, "GETEX": -2,
	"APPEND": 3, "SETRANGE": 4, "EXPIRE": -3, "PEXPIRE": -3, "EXPIREAT": -3, "PEXPIREAT": -3,
	"PERSIST": 2, "RESTORE": -4, "DEL": -2, "UNLINK": -2, "MSET": -3, "MSETNX": -3,
	"RENAME": 3, "RENAMENX": 3, "MOVE": 3, "COPY": -3,
}

// checkRefs checks what holds for the refs of any command: each is an argument (not the
// name) that its rule owns, in the current DB or a valid DB number; the command's arity is
// right; hash commands only for hash rules and only when they name the owner field; string
// edits only for JSON rules.
func checkRefs(t *testing.T, s *Schema, a [][]byte, refs []Ref) {
	t.Helper()
	if len(refs) == 0 {
		return
	}
	name := strings.ToUpper(string(a[0]))
	if n, ok := redisArity[name]; ok {
		if (n > 0 && len(a) != n) || (n < 0 && len(a) < -n) {
			t.Errorf("refs for a command of wrong arity (%d args, Redis arity %d)", len(a), n)
		}
		if (name == "HSET" || name == "HMSET") && len(a)%2 != 0 {
			t.Errorf("refs for %s with an odd field/value list", name)
		}
		if (name == "MSET" || name == "MSETNX") && len(a)%2 != 1 {
			t.Errorf("refs for %s with an odd key/value list", name)
		}
	}
	for _, r := range refs {
		if r.Rule < 0 || r.Rule >= len(s.Rules) {
			t.Fatalf("ref %q: rule %d out of range", r.Key, r.Rule)
		}
		if m := s.Match(r.Key); m != r.Rule {
			t.Errorf("ref %q has rule %d, but Match says %d", r.Key, r.Rule, m)
		}
		found := false
		for _, x := range a[1:] {
			if bytes.Equal(x, r.Key) {
				found = true
			}
		}
		if !found {
			t.Errorf("ref %q is not one of the arguments", r.Key)
		}
		if r.DB < CurrentDB {
			t.Errorf("ref %q: DB %d", r.Key, r.DB)
		}
		rule := s.Rules[r.Rule]
		switch name {
		case "HSET", "HMSET", "HSETNX", "HINCRBY", "HINCRBYFLOAT", "HDEL":
			if rule.Field == "" {
				t.Errorf("hash command planned for JSON rule %s", rule.Name)
			}
			if !bytes.Equal(r.Key, a[1]) {
				t.Errorf("hash command ref %q is not its key", r.Key)
			}
			named := false
			for _, x := range a[2:] {
				named = named || string(x) == rule.Field
			}
			if !named {
				t.Errorf("hash command planned without naming the owner field %q", rule.Field)
			}
			if !r.KeepsTTL {
				t.Errorf("hash command ref without KeepsTTL")
			}
		case "APPEND", "SETRANGE":
			if rule.JSONPath == "" {
				t.Errorf("%s planned for hash rule %s", name, rule.Name)
			}
		default:
			if r.Owner != nil || r.KeepsTTL {
				t.Errorf("%s ref with a hint: %s", name, showRefs([]Ref{r}))
			}
		}
		if r.DB != CurrentDB && name != "MOVE" && name != "COPY" {
			t.Errorf("%s ref in DB %d", name, r.DB)
		}
	}
}

// fakeApply stands in for the generated apply script, so the golden bytes do not change with
// every edit of the Lua files.
var fakeApply = Script{Name: "apply", Body: "-- apply\nreturn 1\n", SHA: "0123456789abcdef0123456789abcdef01234567"}

// applyGolden is the table of commands whose AppendApply bytes are kept in testdata/apply.golden.
var applyGolden = []struct {
	name          string
	cmd           string
	byBody, resp3 bool
}{
	{"hset-owner", "HSET session:a userid 42 name x", false, false},
	{"hset-owner-resp3", "HSET session:a userid 42", false, true},
	{"hset-owner-by-body", "HSET session:a userid 42", true, false},
	{"hset-empty-owner", "HSET session:a userid ''", false, false},
	{"hsetnx-no-hint", "HSETNX zsess:z uid 7", false, false},
	{"hdel-owner", "HDEL gsess:g name uid", false, false},
	{"set-json-ex", `SET sess:s {"passport":{"user":"42"}} EX 60`, false, false},
	{"set-by-body-resp3", "SET sess:s x", true, true},
	{"del-many", "DEL session:a other sess:b zsess:c gsess:d", false, false},
	{"mset", "MSET session:a x other y", false, false},
	{"rename-within", "RENAME session:a session:b", false, false},
	{"move", "MOVE session:a 3", false, false},
	{"move-by-body", "MOVE session:a 12", true, false},
	{"copy-db", "COPY other session:b REPLACE DB 2", false, false},
	{"expire", "pexpireat session:a 1700000000000", false, false},
	{"restore", "RESTORE sess:s 0 PAYLOAD", false, false}, // PAYLOAD: binary bytes with a CRLF
}

// TestAppendApplyGolden keeps the exact bytes of rewritten commands; refresh with -update.
func TestAppendApplyGolden(t *testing.T) {
	s := testSchema(t)
	var out strings.Builder
	out.WriteString("# AppendApply output for the test schema with a stand-in script " +
		"(go test ./rewrite -update). One RESP line per line; lines that are not plain ASCII are Go-quoted.\n")
	for _, tc := range applyGolden {
		a := args(tc.cmd)
		if tc.name == "restore" {
			a[3] = []byte("\x00\x01\r\n\xff\"")
		}
		refs := s.Planner(string(a[0]))(nil, a)
		if len(refs) == 0 {
			t.Fatalf("%s: no refs", tc.name)
		}
		b := s.AppendApply([]byte("PREFIX"), &fakeApply, tc.byBody, tc.resp3, refs, a)
		if !bytes.HasPrefix(b, []byte("PREFIX")) {
			t.Fatalf("%s: dst prefix lost", tc.name)
		}
		b = b[len("PREFIX"):]
		if err := checkApply(s, &fakeApply, tc.byBody, tc.resp3, refs, a, b); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		fmt.Fprintf(&out, "\n=== %s: %s (byBody=%v resp3=%v)\n", tc.name, strconv.Quote(tc.cmd), tc.byBody, tc.resp3)
		out.WriteString(renderRESP(b))
	}
	golden(t, "apply.golden", out.String())
}

// renderRESP shows bytes one CRLF-terminated line per line, quoting lines that are not plain
// printable ASCII (or start with a quote) so the rendering stays exact and unambiguous.
func renderRESP(b []byte) string {
	var out strings.Builder
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\r\n"))
		var line []byte
		if i < 0 {
			line, b = b, nil
			out.WriteString("(no CRLF) ")
		} else {
			line, b = b[:i], b[i+2:]
		}
		plain := len(line) == 0 || line[0] != '"'
		for _, c := range line {
			if c < 0x20 || c >= 0x7f {
				plain = false
			}
		}
		if plain {
			out.Write(line)
		} else {
			out.WriteString(strconv.Quote(string(line)))
		}
		out.WriteByte('\n')
	}
	return out.String()
}

// TestLuaHeaderGolden keeps the Lua constants generated for the test schema and for a schema
// whose names need escaping.
func TestLuaHeaderGolden(t *testing.T) {
	odd := mustSchema(t, "p\"\\:",
		Rule{Name: "odd", Pattern: "a\"b\n\x00é1*9\x7f", Field: "f\"\r", Layout: LayoutSet, IndexKey: "u\\{uid}\t2"},
		Rule{Name: "deep", Pattern: "*", JSONPath: "a.b.c", Layout: LayoutGlobalZSet, IndexKey: "idx"},
	)
	var b strings.Builder
	b.WriteString("-- test schema\n")
	b.WriteString(testSchema(t).luaHeader())
	b.WriteString("-- names that need escaping\n")
	b.WriteString(odd.luaHeader())
	golden(t, "header.golden", b.String())
}

func TestScripts(t *testing.T) {
	s := testSchema(t)
	sc := s.Scripts()
	header := s.luaHeader()
	common := mustRead("common.lua")
	seen := map[string]string{}
	for _, x := range sc.All() {
		if x.Name == "" {
			t.Fatalf("script without a name")
		}
		own := mustRead(x.Name + ".lua")
		if x.Body != header+common+own {
			t.Errorf("%s: body is not header + common.lua + %s.lua", x.Name, x.Name)
		}
		sum := sha1.Sum([]byte(x.Body))
		if x.SHA != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: SHA %s is not the body's", x.Name, x.SHA)
		}
		if prev, ok := seen[x.SHA]; ok {
			t.Errorf("%s and %s have the same SHA", prev, x.Name)
		}
		seen[x.SHA] = x.Name
	}
	if sc.Apply.Name != "apply" || sc.Sessions.Name != "sessions" {
		t.Errorf("names: %q %q", sc.Apply.Name, sc.Sessions.Name)
	}
	// Generated once per schema: the same schema gives the same scripts.
	if again := s.Scripts(); again.Apply.SHA != sc.Apply.SHA {
		t.Errorf("Scripts is not deterministic")
	}
	// Another schema, other constants, other SHA.
	other := mustSchema(t, "x:", DefaultRule())
	if other.Scripts().Apply.SHA == sc.Apply.SHA {
		t.Errorf("different schemas share the apply SHA")
	}
}

// TestLuaString checks the quoting against a decoder of Lua's escapes: every byte string
// survives, and a digit after an escape is not absorbed into it.
func TestLuaString(t *testing.T) {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	for _, s := range []string{"", "plain", `"`, `\`, "\x00", "\x001", "\n9", "é", string(all), "\\\"\\\"", "\x7f0"} {
		q := luaString(s)
		got, err := unLuaString(q)
		if err != nil {
			t.Errorf("luaString(%q) = %s: %v", s, q, err)
			continue
		}
		if got != s {
			t.Errorf("luaString(%q) = %s decodes to %q", s, q, got)
		}
		for i := 0; i < len(q); i++ {
			if q[i] < 0x20 || q[i] >= 0x7f {
				t.Errorf("luaString(%q) = %q has a raw byte %#x", s, q, q[i])
				break
			}
		}
	}
}

// unLuaString decodes a double-quoted Lua 5.1 string literal with the escapes luaString uses
// (\" \\ and \ddd, which takes up to three digits).
func unLuaString(q string) (string, error) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", errors.New("not double-quoted")
	}
	body := q[1 : len(q)-1]
	var b []byte
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '"':
			return "", errors.New("unescaped quote")
		case c != '\\':
			b = append(b, c)
		case i+1 >= len(body):
			return "", errors.New("trailing backslash")
		case body[i+1] == '"' || body[i+1] == '\\':
			b = append(b, body[i+1])
			i++
		case body[i+1] >= '0' && body[i+1] <= '9':
			n, j := 0, i+1
			for ; j < len(body) && j < i+4 && body[j] >= '0' && body[j] <= '9'; j++ {
				n = n*10 + int(body[j]-'0')
			}
			if n > 255 {
				return "", fmt.Errorf("escape \\%d too large", n)
			}
			b = append(b, byte(n))
			i = j - 1
		default:
			return "", fmt.Errorf("escape \\%c not produced by luaString", body[i+1])
		}
	}
	return string(b), nil
}

// golden compares got with testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with go test ./rewrite -update)", err)
	}
	if string(want) != got {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs at line %d (refresh with -update if intended):\n got: %q\nwant: %q", path, i+1, g, w)
			}
		}
	}
}

// parseMultibulk parses b as exactly one RESP multibulk of bulk strings.
func parseMultibulk(b []byte) ([][]byte, error) {
	line := func() (int, error) {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 1 {
			return 0, fmt.Errorf("no header line in %q", clip(b))
		}
		n, err := strconv.Atoi(string(b[1:i]))
		if err != nil || n < 0 || strconv.Itoa(n) != string(b[1:i]) {
			return 0, fmt.Errorf("bad length in %q", b[:i])
		}
		b = b[i+2:]
		return n, nil
	}
	if len(b) == 0 || b[0] != '*' {
		return nil, errors.New("not a multibulk")
	}
	n, err := line()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, n)
	for range n {
		if len(b) == 0 || b[0] != '$' {
			return nil, fmt.Errorf("element %d is not a bulk string: %q", len(out), clip(b))
		}
		l, err := line()
		if err != nil {
			return nil, err
		}
		if len(b) < l+2 || b[l] != '\r' || b[l+1] != '\n' {
			return nil, fmt.Errorf("element %d: bulk of %d bytes not followed by CRLF", len(out), l)
		}
		out = append(out, b[:l])
		b = b[l+2:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(b))
	}
	return out, nil
}

func clip(b []byte) []byte {
	if len(b) > 60 {
		return b[:60]
	}
	return b
}

// checkApply checks that b is the well-formed script call AppendApply documents: EVAL body or
// EVALSHA sha, the refs as KEYS, protocol, count, a descriptor and hint per ref, then exactly
// the original arguments.
func checkApply(s *Schema, sc *Script, byBody, resp3 bool, refs []Ref, a [][]byte, b []byte) error {
	el, err := parseMultibulk(b)
	if err != nil {
		return err
	}
	n := len(refs)
	if len(el) != 3+n+2+2*n+len(a) {
		return fmt.Errorf("%d elements, want %d", len(el), 3+n+2+2*n+len(a))
	}
	switch {
	case byBody && (string(el[0]) != "EVAL" || string(el[1]) != sc.Body):
		return fmt.Errorf("by body: starts %q %q", el[0], clip(el[1]))
	case !byBody && (string(el[0]) != "EVALSHA" || string(el[1]) != sc.SHA):
		return fmt.Errorf("by SHA: starts %q %q", el[0], el[1])
	case string(el[2]) != strconv.Itoa(n):
		return fmt.Errorf("numkeys %q, want %d", el[2], n)
	}
	for i, r := range refs {
		if !bytes.Equal(el[3+i], r.Key) {
			return fmt.Errorf("KEYS[%d] = %q, want %q", i+1, el[3+i], r.Key)
		}
	}
	argv := el[3+n:]
	proto := "2"
	if resp3 {
		proto = "3"
	}
	if string(argv[0]) != proto || string(argv[1]) != strconv.Itoa(n) {
		return fmt.Errorf("ARGV[1..2] = %q %q", argv[0], argv[1])
	}
	sawOtherDB := false
	for i, r := range refs {
		d := strconv.Itoa(r.Rule + 1)
		if r.DB != CurrentDB {
			d += "@" + strconv.Itoa(r.DB)
			sawOtherDB = true
		} else if sawOtherDB {
			return fmt.Errorf("ref %d in the current DB after one in another DB (the script SELECTs)", i+1)
		}
		if r.KeepsTTL {
			d += "k"
		}
		if string(argv[2+2*i]) != d {
			return fmt.Errorf("descriptor %d = %q, want %q", i+1, argv[2+2*i], d)
		}
		hint := ""
		if r.Owner != nil {
			hint = "=" + string(r.Owner)
		}
		if string(argv[3+2*i]) != hint {
			return fmt.Errorf("hint %d = %q, want %q", i+1, argv[3+2*i], hint)
		}
	}
	tail := argv[2+2*n:]
	if !equalArgs(tail, a) {
		return fmt.Errorf("trailing elements %q are not the command %q", tail, a)
	}
	return nil
}
