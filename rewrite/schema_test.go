package rewrite

import (
	"errors"
	"strings"
	"testing"
)

// testRules is the proxy tests' schema (proxy/harness_test.go): the default rule, a
// connect-redis style JSON rule and one rule per other layout, each with its own index.
func testRules() []Rule {
	return []Rule{
		DefaultRule(),
		{Name: "express", Pattern: "sess:*", JSONPath: "passport.user", Layout: LayoutSet, IndexKey: "juser:{uid}"},
		{Name: "scored", Pattern: "zsess:*", Field: "uid", Layout: LayoutZSet, IndexKey: "zuser:{uid}"},
		{Name: "global", Pattern: "gsess:*", Field: "uid", Layout: LayoutGlobalZSet, IndexKey: "idx-session-uid"},
	}
}

func testSchema(t testing.TB) *Schema {
	t.Helper()
	return mustSchema(t, DefaultPrefix, testRules()...)
}

func mustSchema(t testing.TB, prefix string, rules ...Rule) *Schema {
	t.Helper()
	s, err := NewSchema(prefix, rules)
	if err != nil {
		t.Fatalf("NewSchema: %v", err)
	}
	return s
}

func TestNewSchemaValidation(t *testing.T) {
	ok := func(mod func(*Rule)) []Rule {
		r := Rule{Name: "r", Pattern: "s:*", Field: "uid", Layout: LayoutSet, IndexKey: "u:{uid}"}
		mod(&r)
		return []Rule{r}
	}
	same := func(*Rule) {}
	cases := []struct {
		name   string
		prefix string
		rules  []Rule
		errs   []string // substrings, one per expected joined error; none: valid
	}{
		{name: "default rule", prefix: DefaultPrefix, rules: []Rule{DefaultRule()}},
		{name: "test schema", prefix: DefaultPrefix, rules: testRules()},
		{name: "suffix pattern", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "app:*:session" })},
		{name: "uid in the middle of the index key", prefix: "sp:", rules: ok(func(r *Rule) { r.IndexKey = "u:{uid}:sessions" })},
		{name: "zset layout", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout = LayoutZSet })},
		{name: "global-zset layout", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout, r.IndexKey = LayoutGlobalZSet, "idx" })},
		{name: "json path", prefix: "sp:", rules: ok(func(r *Rule) { r.Field, r.JSONPath = "", "a.b" })},
		{name: "index key merely contains the prefix", prefix: "sp:", rules: ok(func(r *Rule) { r.IndexKey = "u:sp:{uid}" })},
		{name: "rules with their own index keys", prefix: "sp:",
			rules: []Rule{ok(same)[0], ok(func(r *Rule) { r.Name, r.Pattern, r.IndexKey = "two", "t:*", "uu:{uid}" })[0]}},
		{name: "pattern shares a prefix with the bookkeeping keys", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "sp:s:*" })},

		// Keys must not belong to two roles (each rule its own index; sessions, index and
		// bookkeeping keys apart).
		{name: "two rules share an index key", prefix: DefaultPrefix,
			rules: func() []Rule { r := testRules(); r[1].IndexKey = "user:{uid}"; return r }(),
			errs:  []string{`rule 2: index_key "user:{uid}" can name the same key as rule 1's "user:{uid}": each rule needs its own index`}},
		{name: "set and zset rules share an index key", prefix: "sp:",
			rules: []Rule{ok(same)[0], ok(func(r *Rule) { r.Name, r.Pattern, r.Layout = "two", "t:*", LayoutZSet })[0]},
			errs:  []string{`rule 2: index_key "u:{uid}" can name the same key as rule 1's`}},
		{name: "two global-zset rules share their key", prefix: "sp:",
			rules: []Rule{
				ok(func(r *Rule) { r.Layout, r.IndexKey = LayoutGlobalZSet, "idx" })[0],
				ok(func(r *Rule) { r.Name, r.Pattern, r.Layout, r.IndexKey = "two", "t:*", LayoutGlobalZSet, "idx" })[0]},
			errs: []string{`rule 2: index_key "idx" can name the same key as rule 1's`}},
		{name: "three rules share an index key", prefix: "sp:",
			rules: []Rule{ok(same)[0],
				ok(func(r *Rule) { r.Name, r.Pattern = "two", "t:*" })[0],
				ok(func(r *Rule) { r.Name, r.Pattern = "three", "v:*" })[0]},
			errs: []string{`rule 2: index_key "u:{uid}" can name the same key as rule 1's`, `rule 3: index_key "u:{uid}" can name the same key as rule 1's`,
				`rule 3: index_key "u:{uid}" can name the same key as rule 2's`}},
		{name: "index key is its own rule's session key", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "u:*" }),
			errs: []string{`rule 1: index_key "u:{uid}" can name a session key of rule 1`}},
		{name: "index key is another rule's session key", prefix: "sp:",
			rules: []Rule{ok(func(r *Rule) { r.IndexKey = "t:{uid}" })[0], ok(func(r *Rule) { r.Name, r.Pattern = "two", "t:*" })[0]},
			errs:  []string{`rule 1: index_key "t:{uid}" can name a session key of rule 2`}},
		{name: "global index key is a session key", prefix: "sp:",
			rules: ok(func(r *Rule) { r.Layout, r.IndexKey = LayoutGlobalZSet, "s:all" }),
			errs:  []string{`rule 1: index_key "s:all" can name a session key of rule 1`}},
		{name: "pattern matches the owner map", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "*owners"; r.IndexKey = "u:{uid}:x" }),
			errs: []string{`rule 1: pattern "*owners" matches the bookkeeping key "sp:owners"`}},
		{name: "pattern matches the ledger", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "sp:dead*" }),
			errs: []string{`rule 1: pattern "sp:dead*" matches the bookkeeping key "sp:deadlines"`}},
		{name: "pattern matches the reaper lease", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "*-lease"; r.IndexKey = "u:{uid}:x" }),
			errs: []string{`rule 1: pattern "*-lease" matches the bookkeeping key "sp:reaper-lease"`}},
		{name: "pattern matches every bookkeeping key", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "sp:*" }),
			errs: []string{`pattern "sp:*" matches the bookkeeping key "sp:owners"`, `"sp:deadlines"`, `"sp:reaper-lease"`}},
		{name: "pattern is only the star", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "*" }),
			errs: []string{`rule 1: index_key "u:{uid}" can name a session key of rule 1`,
				`rule 1: pattern "*" matches the bookkeeping key "sp:owners"`, `"sp:deadlines"`, `"sp:reaper-lease"`}},
		{name: "a later rule's pattern takes every key", prefix: "sp:",
			rules: []Rule{ok(same)[0], ok(func(r *Rule) { r.Name, r.Pattern, r.IndexKey = "two", "*", "w:{uid}" })[0]},
			errs: []string{`rule 1: index_key "u:{uid}" can name a session key of rule 2`,
				`rule 2: index_key "w:{uid}" can name a session key of rule 2`,
				`rule 2: pattern "*" matches the bookkeeping key "sp:owners"`, `"sp:deadlines"`, `"sp:reaper-lease"`}},

		{name: "empty prefix", prefix: "", rules: ok(same), errs: []string{"empty bookkeeping prefix"}},
		{name: "no rules", prefix: "sp:", errs: []string{"no rules"}},
		{name: "empty prefix and no rules", errs: []string{"empty bookkeeping prefix", "no rules"}},
		{name: "empty name", prefix: "sp:", rules: ok(func(r *Rule) { r.Name = "" }), errs: []string{`rule 1: name "" must be a non-empty word`}},
		{name: "name with a space", prefix: "sp:", rules: ok(func(r *Rule) { r.Name = "a b" }), errs: []string{"must be a non-empty word"}},
		{name: "name with a newline", prefix: "sp:", rules: ok(func(r *Rule) { r.Name = "a\nb" }), errs: []string{"must be a non-empty word"}},
		{name: "duplicate name", prefix: "sp:",
			rules: []Rule{ok(same)[0], ok(func(r *Rule) { r.Pattern = "t:*" })[0]},
			errs:  []string{`rule 2: duplicate name "r"`}},
		{name: "pattern without star", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "s:" }), errs: []string{"exactly one '*'"}},
		{name: "empty pattern", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "" }), errs: []string{"exactly one '*'"}},
		{name: "pattern with two stars", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "s:*:*" }), errs: []string{"exactly one '*'"}},
		{name: "pattern with ?", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "s?:*" }), errs: []string{"no other glob characters"}},
		{name: "pattern with class", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = "s[ab]:*" }), errs: []string{"no other glob characters"}},
		{name: "pattern with backslash", prefix: "sp:", rules: ok(func(r *Rule) { r.Pattern = `s\:*` }), errs: []string{"no other glob characters"}},
		{name: "both field and json path", prefix: "sp:", rules: ok(func(r *Rule) { r.JSONPath = "a" }), errs: []string{"exactly one of field and json_path"}},
		{name: "neither field nor json path", prefix: "sp:", rules: ok(func(r *Rule) { r.Field = "" }), errs: []string{"exactly one of field and json_path"}},
		{name: "empty layout", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout = "" }), errs: []string{`layout "" must be set, zset or global-zset`}},
		{name: "unknown layout", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout = "list" }), errs: []string{`layout "list"`}},
		{name: "layout is case sensitive", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout = "SET" }), errs: []string{`layout "SET"`}},
		{name: "set index key without uid", prefix: "sp:", rules: ok(func(r *Rule) { r.IndexKey = "u:all" }), errs: []string{"must contain {uid} once for layout set"}},
		{name: "set index key with two uids", prefix: "sp:", rules: ok(func(r *Rule) { r.IndexKey = "{uid}:{uid}" }), errs: []string{"must contain {uid} once"}},
		{name: "empty set index key", prefix: "sp:", rules: ok(func(r *Rule) { r.IndexKey = "" }), errs: []string{"must contain {uid} once"}},
		{name: "zset index key without uid", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout, r.IndexKey = LayoutZSet, "z" }), errs: []string{"for layout zset"}},
		{name: "global-zset index key with uid", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout = LayoutGlobalZSet }), errs: []string{"must be one plain key for layout global-zset"}},
		{name: "empty global-zset index key", prefix: "sp:", rules: ok(func(r *Rule) { r.Layout, r.IndexKey = LayoutGlobalZSet, "" }), errs: []string{"one plain key"}},
		{name: "index key uses the bookkeeping prefix", prefix: "sp:", rules: ok(func(r *Rule) { r.IndexKey = "sp:{uid}" }), errs: []string{`index_key "sp:{uid}" must not use the bookkeeping prefix "sp:"`}},
		{name: "global index key uses the bookkeeping prefix", prefix: DefaultPrefix,
			rules: ok(func(r *Rule) { r.Layout, r.IndexKey = LayoutGlobalZSet, DefaultPrefix+"idx" }), errs: []string{"bookkeeping prefix"}},
		{name: "every error of a rule is reported", prefix: "sp:",
			rules: ok(func(r *Rule) { *r = Rule{Name: "x y", Pattern: "nostar", Layout: "tree"} }),
			errs:  []string{"non-empty word", "exactly one '*'", "exactly one of field and json_path", `layout "tree"`}},
		{name: "errors name their rule", prefix: "sp:",
			rules: []Rule{ok(same)[0], ok(func(r *Rule) { r.Name, r.Layout = "two", "" })[0]},
			errs:  []string{"rule 2: layout"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := NewSchema(tc.prefix, tc.rules)
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if s.Prefix != tc.prefix || len(s.Rules) != len(tc.rules) {
					t.Fatalf("schema %+v", s)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.errs)
			}
			if s != nil {
				t.Errorf("schema returned with an error")
			}
			if !errors.Is(err, ErrSchema) {
				t.Errorf("error %v is not ErrSchema", err)
			}
			msgs := strings.Split(err.Error(), "\n")
			if len(msgs) != len(tc.errs) {
				t.Errorf("%d errors, want %d:\n%v", len(msgs), len(tc.errs), err)
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

// TestNewSchemaOverlapForSomeUID: two roles must not share a key for any uid, not only for the
// uid "0" that NewSchema tries. Each schema below is accepted, yet some uid turns a key of one
// role into a key of another:
//   - "user:{uid}" and "user:{uid}:json": user:5:json is rule 1's index of uid "5:json" and rule
//     2's index of uid 5. SESSIONS.LIST 5:json (rule 1) reads rule 2's entry b as session:b,
//     finds no owner and SREMs it: the live sess:b drops out of SESSIONS.LIST 5 express (seen
//     end to end through the proxy), and SESSIONS.REINDEX of rule 1 (reaper/repair.go scans
//     IndexScanPattern "user:*") prunes rule 2's entries the same way;
//   - pattern "app:s:*" and index "app:{uid}": uid "s:1" indexes into the session key app:s:1;
//   - "id{uid}" (set) and "idx" (global-zset): uid "x" indexes into the global index.
func TestNewSchemaOverlapForSomeUID(t *testing.T) {
	rule := func(name, pattern string, layout Layout, ikey string) Rule {
		return Rule{Name: name, Pattern: pattern, Field: "uid", Layout: layout, IndexKey: ikey}
	}
	for _, tc := range []struct {
		name     string
		rules    []Rule
		uid      string // a uid that makes the keys collide
		collides func(s *Schema, uid string) bool
	}{
		{"index templates overlap",
			[]Rule{rule("a", "session:*", LayoutSet, "user:{uid}"), rule("b", "sess:*", LayoutSet, "user:{uid}:json")},
			"5:json", func(s *Schema, uid string) bool { return s.IndexKey(0, uid) == s.IndexKey(1, "5") }},
		{"index template inside a pattern",
			[]Rule{rule("a", "app:s:*", LayoutSet, "app:{uid}")},
			"s:1", func(s *Schema, uid string) bool { return s.Match([]byte(s.IndexKey(0, uid))) == 0 }},
		{"index template reaches a global index",
			[]Rule{rule("a", "s:*", LayoutSet, "id{uid}"), rule("b", "t:*", LayoutGlobalZSet, "idx")},
			"x", func(s *Schema, uid string) bool { return s.IndexKey(0, uid) == s.IndexKey(1, "") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSchema("sp:", tc.rules)
			if err != nil {
				if !errors.Is(err, ErrSchema) {
					t.Fatalf("error %v is not ErrSchema", err)
				}
				return // rejected: what this test wants
			}
			if !tc.collides(s, tc.uid) {
				t.Fatalf("the case does not collide for uid %q", tc.uid)
			}
			t.Errorf("REMAINING BUG (rewrite/schema.go NewSchema checks only the uid \"0\" and equal templates): "+
				"schema accepted, but for uid %q one key has two roles", tc.uid)
		})
	}
}

func TestSchemaMatch(t *testing.T) {
	s := testSchema(t)
	suffix := mustSchema(t, "sp:",
		Rule{Name: "a", Pattern: "app:*:sess", Field: "u", Layout: LayoutSet, IndexKey: "u:{uid}:i"},
		Rule{Name: "b", Pattern: "app:*", Field: "u", Layout: LayoutSet, IndexKey: "v:{uid}:i"},
		Rule{Name: "c", Pattern: "*.json", JSONPath: "u", Layout: LayoutSet, IndexKey: "w:{uid}:i"})
	cases := []struct {
		s    *Schema
		key  string
		want int
	}{
		{s, "session:abc", 0},
		{s, "session:", 0}, // an empty id is still the rule's key
		{s, "session:a:b", 0},
		{s, "session", -1},
		{s, "Session:abc", -1}, // keys are case sensitive
		{s, "xsession:abc", -1},
		{s, "sess:abc", 1},
		{s, "sessio:abc", -1},
		{s, "zsess:1", 2},
		{s, "gsess:1", 3},
		{s, "user:1", -1},
		{s, "sessionproxy:owners", -1},
		{s, "sessionproxy:deadlines", -1},
		{s, "sessionproxy:reaper-lease", -1},
		{s, "juser:1", -1},
		{s, "zuser:1", -1},
		{s, "idx-session-uid", -1},
		{s, "", -1},
		{s, "session:\x00\xff", 0},
		{suffix, "app:1:sess", 0},
		{suffix, "app::sess", 0},
		{suffix, "app:sess", 1},    // too short for rule a's prefix and suffix to both fit
		{suffix, "app:1:sessx", 1}, // first matching rule wins; b matches
		{suffix, "app:", 1},
		{suffix, "x.json", 2},
		{suffix, ".json", 2},
		{suffix, "json", -1},
	}
	for _, tc := range cases {
		if got := tc.s.Match([]byte(tc.key)); got != tc.want {
			t.Errorf("Match(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

func TestSchemaNames(t *testing.T) {
	s := testSchema(t)
	if got := s.OwnersKey(); got != "sessionproxy:owners" {
		t.Errorf("OwnersKey = %q", got)
	}
	if got := s.LedgerKey(); got != "sessionproxy:deadlines" {
		t.Errorf("LedgerKey = %q", got)
	}
	other := mustSchema(t, "p{x}:", DefaultRule())
	if other.OwnersKey() != "p{x}:owners" || other.LedgerKey() != "p{x}:deadlines" {
		t.Errorf("prefixed names: %q %q", other.OwnersKey(), other.LedgerKey())
	}
	for _, tc := range []struct {
		name string
		want int
		ok   bool
	}{
		{"", 0, true}, {"session", 0, true}, {"EXPRESS", 1, true}, {"Scored", 2, true},
		{"global", 3, true}, {"nope", -1, false}, {"session ", -1, false},
	} {
		if got, ok := s.RuleByName(tc.name); got != tc.want || ok != tc.ok {
			t.Errorf("RuleByName(%q) = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSchemaKeys(t *testing.T) {
	s := testSchema(t)
	suffix := mustSchema(t, "sp:",
		Rule{Name: "a", Pattern: "app:*:sess", Field: "u", Layout: LayoutZSet, IndexKey: "u:{uid}:all"},
	)
	t.Run("SessionID and SessionKey", func(t *testing.T) {
		for _, tc := range []struct {
			s        *Schema
			rule     int
			key, sid string
		}{
			{s, 0, "session:abc", "abc"},
			{s, 0, "session:", ""},
			{s, 1, "sess:a:b", "a:b"},
			{s, 3, "gsess:9", "9"},
			{suffix, 0, "app:42:sess", "42"},
			{suffix, 0, "app::sess", ""},
		} {
			if got := tc.s.SessionID(tc.rule, tc.key); got != tc.sid {
				t.Errorf("SessionID(%d, %q) = %q, want %q", tc.rule, tc.key, got, tc.sid)
			}
			if got := tc.s.SessionKey(tc.rule, tc.sid); got != tc.key {
				t.Errorf("SessionKey(%d, %q) = %q, want %q", tc.rule, tc.sid, got, tc.key)
			}
		}
	})
	t.Run("IndexKey", func(t *testing.T) {
		for _, tc := range []struct {
			s         *Schema
			rule      int
			uid, want string
		}{
			{s, 0, "1", "user:1"},
			{s, 1, "42", "juser:42"},
			{s, 2, "7", "zuser:7"},
			{s, 3, "7", "idx-session-uid"}, // global: one key for everyone
			{s, 0, "", "user:"},
			{s, 0, "{uid}", "user:{uid}"}, // replaced once: a uid that looks like the template stays
			{suffix, 0, "9", "u:9:all"},
		} {
			if got := tc.s.IndexKey(tc.rule, tc.uid); got != tc.want {
				t.Errorf("IndexKey(%d, %q) = %q, want %q", tc.rule, tc.uid, got, tc.want)
			}
		}
	})
	t.Run("ScanPattern", func(t *testing.T) {
		for _, tc := range []struct {
			s    *Schema
			rule int
			want string
		}{
			{s, 0, "session:*"}, {s, 1, "sess:*"}, {s, 2, "zsess:*"}, {s, 3, "gsess:*"},
			{suffix, 0, "app:*:sess"},
		} {
			if got := tc.s.ScanPattern(tc.rule); got != tc.want {
				t.Errorf("ScanPattern(%d) = %q, want %q", tc.rule, got, tc.want)
			}
		}
	})
	t.Run("IndexScanPattern", func(t *testing.T) {
		glob := mustSchema(t, "sp:",
			Rule{Name: "a", Pattern: "s:*", Field: "u", Layout: LayoutSet, IndexKey: `i[1]?*\:{uid}:x*`},
			Rule{Name: "b", Pattern: "t:*", Field: "u", Layout: LayoutGlobalZSet, IndexKey: `idx*[1]`})
		for _, tc := range []struct {
			s    *Schema
			rule int
			want string
		}{
			{s, 0, "user:*"}, {s, 1, "juser:*"}, {s, 2, "zuser:*"}, {s, 3, "idx-session-uid"},
			{suffix, 0, "u:*:all"},
			{glob, 0, `i\[1\]\?\*\\:*:x\*`},
			{glob, 1, `idx\*\[1\]`},
		} {
			if got := tc.s.IndexScanPattern(tc.rule); got != tc.want {
				t.Errorf("IndexScanPattern(%d) = %q, want %q", tc.rule, got, tc.want)
			}
		}
	})
	t.Run("UIDFromIndexKey", func(t *testing.T) {
		for _, tc := range []struct {
			s    *Schema
			rule int
			key  string
			uid  string
			ok   bool
		}{
			{s, 0, "user:42", "42", true},
			{s, 0, "user:", "", true},
			{s, 0, "user:a:b", "a:b", true},
			{s, 0, "usr:1", "", false},
			{s, 0, "user", "", false},
			{s, 2, "zuser:1", "1", true},
			{s, 2, "user:1", "", false},
			{s, 1, "juser:42", "42", true},
			{s, 1, "user:42", "", false}, // each rule its own index keys
			{s, 0, "juser:42", "", false},
			{s, 3, "idx-session-uid", "", false}, // global: no uid in the key
			{suffix, 0, "u:7:all", "7", true},
			{suffix, 0, "u::all", "", true},
			{suffix, 0, "u:all", "", false}, // prefix and suffix overlap
			{suffix, 0, "u:7:al", "", false},
			{suffix, 0, "x:7:all", "", false},
		} {
			uid, ok := tc.s.UIDFromIndexKey(tc.rule, tc.key)
			if uid != tc.uid || ok != tc.ok {
				t.Errorf("UIDFromIndexKey(%d, %q) = %q, %v; want %q, %v", tc.rule, tc.key, uid, ok, tc.uid, tc.ok)
			}
			if ok && tc.s.IndexKey(tc.rule, uid) != tc.key {
				t.Errorf("IndexKey(UIDFromIndexKey(%q)) = %q", tc.key, tc.s.IndexKey(tc.rule, uid))
			}
		}
	})
}

func TestNumericUID(t *testing.T) {
	for _, tc := range []struct {
		uid  string
		want bool
	}{
		{"0", true}, {"1", true}, {"-1", true}, {"42", true},
		{"9007199254740991", true}, {"-9007199254740991", true}, // ±(2^53-1)
		{"9007199254740992", false}, {"-9007199254740992", false}, // 2^53: no longer exact next to 2^53+1
		{"9999999999999999", false}, // 16 digits, beyond 2^53
		{"", false}, {"-", false}, {"-0", false}, {"01", false}, {"+1", false}, {" 1", false},
		{"1 ", false}, {"1.0", false}, {"1e3", false}, {"0x10", false}, {"abc", false},
		{"99999999999999999999", false},
	} {
		if got := NumericUID(tc.uid); got != tc.want {
			t.Errorf("NumericUID(%q) = %v, want %v", tc.uid, got, tc.want)
		}
	}
}

func TestGlobEscape(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "plain:key": "plain:key", "*": `\*`, "?": `\?`, "[a]": `\[a\]`, `\`: `\\`, "é*": `é\*`,
	} {
		if got := globEscape(in); got != want {
			t.Errorf("globEscape(%q) = %q, want %q", in, got, want)
		}
	}
}
