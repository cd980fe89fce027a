package rewrite

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Layout is how a rule's index is stored.
type Layout string

// The index layouts.
const (
	// LayoutSet keeps one set per user (e.g. user:<uid>) holding session ids.
	LayoutSet Layout = "set"
	// LayoutZSet keeps one sorted set per user holding session ids scored by expiry deadline
	// in ms (+inf without a TTL), so readers can skip dead entries by score.
	LayoutZSet Layout = "zset"
	// LayoutGlobalZSet keeps one sorted set holding session keys scored by the numeric user id.
	LayoutGlobalZSet Layout = "global-zset"
)

// Rule says which keys are sessions, where their owner is and how the index is laid out.
type Rule struct {
	Name     string // unique; used by SESSIONS.* [rule]
	Pattern  string // glob with exactly one '*': the session id
	Field    string // owner in this hash field; or
	JSONPath string // owner at this dotted path of a JSON string value
	Layout   Layout
	// IndexKey is the index key: a template containing "{uid}" for set and zset layouts, a
	// plain key for global-zset.
	IndexKey string

	prefix, suffix []byte // Pattern around the '*'
}

// DefaultRule is the seed app's layout: session:<sid> hashes owned by their userid field,
// indexed in the set user:<uid>.
func DefaultRule() Rule {
	return Rule{Name: "session", Pattern: "session:*", Field: "userid", Layout: LayoutSet, IndexKey: "user:{uid}"}
}

// DefaultPrefix starts every bookkeeping key of the proxy.
const DefaultPrefix = "sessionproxy:"

// Schema is the compiled set of rules plus the bookkeeping key names.
type Schema struct {
	Rules  []Rule
	Prefix string
}

// ErrSchema marks an invalid rule set.
var ErrSchema = errors.New("rewrite: invalid schema")

// NewSchema validates and compiles rules; the first rule whose pattern matches a key owns it.
func NewSchema(prefix string, rules []Rule) (*Schema, error) {
	var errs []error
	bad := func(i int, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: rule %d: %s", ErrSchema, i+1, fmt.Sprintf(format, a...)))
	}
	if prefix == "" {
		errs = append(errs, fmt.Errorf("%w: empty bookkeeping prefix", ErrSchema))
	}
	if len(rules) == 0 {
		errs = append(errs, fmt.Errorf("%w: no rules", ErrSchema))
	}
	names := map[string]bool{}
	out := make([]Rule, len(rules))
	for i, r := range rules {
		if r.Name == "" || strings.ContainsAny(r.Name, " \r\n") {
			bad(i, "name %q must be a non-empty word", r.Name)
		}
		if names[r.Name] {
			bad(i, "duplicate name %q", r.Name)
		}
		names[r.Name] = true
		if strings.Count(r.Pattern, "*") != 1 || strings.ContainsAny(r.Pattern, "?[]\\") {
			bad(i, "pattern %q must contain exactly one '*' and no other glob characters", r.Pattern)
		}
		if (r.Field == "") == (r.JSONPath == "") {
			bad(i, "exactly one of field and json_path must be set")
		}
		switch r.Layout {
		case LayoutSet, LayoutZSet:
			if strings.Count(r.IndexKey, "{uid}") != 1 {
				bad(i, "index_key %q must contain {uid} once for layout %s", r.IndexKey, r.Layout)
			}
		case LayoutGlobalZSet:
			if r.IndexKey == "" || strings.Contains(r.IndexKey, "{uid}") {
				bad(i, "index_key %q must be one plain key for layout global-zset", r.IndexKey)
			}
		default:
			bad(i, "layout %q must be set, zset or global-zset", r.Layout)
		}
		if strings.HasPrefix(r.IndexKey, prefix) && prefix != "" {
			bad(i, "index_key %q must not use the bookkeeping prefix %q", r.IndexKey, prefix)
		}
		if p, s, ok := strings.Cut(r.Pattern, "*"); ok {
			r.prefix, r.suffix = []byte(p), []byte(s)
		}
		out[i] = r
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sch := &Schema{Rules: out, Prefix: prefix}
	// Keys must never belong to two roles: an index shared by two rules would make its members
	// ambiguous (sid "a" of session:a or of sess:a?), and a session pattern that matched an index
	// or bookkeeping key would make the proxy index its own keys. Each pattern and index
	// template is a glob with at most one '*' ({uid}), so overlap is decidable exactly.
	globs := make([]glob, len(out))
	for i, r := range out {
		before, after, _ := strings.Cut(r.IndexKey, "{uid}")
		globs[i] = glob{before, after, strings.Contains(r.IndexKey, "{uid}")}
	}
	book := []string{sch.OwnersKey(), sch.LedgerKey(), prefix + "reaper-lease"}
	for i, r := range out {
		for j := range i {
			if globs[i].overlaps(globs[j]) {
				bad(i, "index_key %q can name the same key as rule %d's %q: each rule needs its own index", r.IndexKey, j+1, out[j].IndexKey)
			}
		}
		for j := range out {
			if globs[i].overlaps(glob{string(out[j].prefix), string(out[j].suffix), true}) {
				bad(i, "index_key %q can name a session key of rule %d (%q)", r.IndexKey, j+1, out[j].Pattern)
			}
		}
		for _, k := range book {
			if globs[i].overlaps(glob{k, "", false}) {
				bad(i, "index_key %q can name the bookkeeping key %q", r.IndexKey, k)
			}
			if (glob{string(r.prefix), string(r.suffix), true}).matches(k) {
				bad(i, "pattern %q matches the bookkeeping key %q", r.Pattern, k)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return sch, nil
}

// glob is a key pattern: pre*suf when star, else the literal key pre.
type glob struct {
	pre, suf string
	star     bool
}

// overlaps reports whether some key matches both globs.
func (g glob) overlaps(h glob) bool {
	switch {
	case !g.star && !h.star:
		return g.pre == h.pre
	case !g.star:
		return h.matches(g.pre)
	case !h.star:
		return g.matches(h.pre)
	}
	prefixes := strings.HasPrefix(g.pre, h.pre) || strings.HasPrefix(h.pre, g.pre)
	suffixes := strings.HasSuffix(g.suf, h.suf) || strings.HasSuffix(h.suf, g.suf)
	return prefixes && suffixes
}

// matches reports whether key matches the star glob g.
func (g glob) matches(key string) bool {
	return len(key) >= len(g.pre)+len(g.suf) && strings.HasPrefix(key, g.pre) && strings.HasSuffix(key, g.suf)
}

// Match returns the index of the rule that owns key, or -1.
func (s *Schema) Match(key []byte) int {
	for i := range s.Rules {
		r := &s.Rules[i]
		if len(key) >= len(r.prefix)+len(r.suffix) && bytes.HasPrefix(key, r.prefix) && bytes.HasSuffix(key, r.suffix) {
			return i
		}
	}
	return -1
}

// RuleByName returns the index of the named rule; "" names the first rule.
func (s *Schema) RuleByName(name string) (int, bool) {
	if name == "" {
		return 0, true
	}
	for i, r := range s.Rules {
		if strings.EqualFold(r.Name, name) {
			return i, true
		}
	}
	return -1, false
}

// OwnersKey is the per-DB hash mapping each indexed session key to its owner: the owner must
// still be known after the session is gone (expired, evicted) to clean its index entry.
func (s *Schema) OwnersKey() string { return s.Prefix + "owners" }

// LedgerKey is the per-DB sorted set of indexed sessions that have a TTL, scored by deadline in ms.
func (s *Schema) LedgerKey() string { return s.Prefix + "deadlines" }

// IndexKey is the index key of uid under rule r.
func (s *Schema) IndexKey(r int, uid string) string {
	return strings.Replace(s.Rules[r].IndexKey, "{uid}", uid, 1)
}

// SessionKey is the key of session id sid under rule r.
func (s *Schema) SessionKey(r int, sid string) string {
	return string(s.Rules[r].prefix) + sid + string(s.Rules[r].suffix)
}

// SessionID is the id part of a session key of rule r.
func (s *Schema) SessionID(r int, key string) string {
	return key[len(s.Rules[r].prefix) : len(key)-len(s.Rules[r].suffix)]
}

// ScanPattern is the SCAN MATCH pattern of rule r's session keys (glob characters escaped).
func (s *Schema) ScanPattern(r int) string {
	return globEscape(string(s.Rules[r].prefix)) + "*" + globEscape(string(s.Rules[r].suffix))
}

// IndexScanPattern is the SCAN MATCH pattern of rule r's index keys.
func (s *Schema) IndexScanPattern(r int) string {
	before, after, ok := strings.Cut(s.Rules[r].IndexKey, "{uid}")
	if !ok {
		return globEscape(s.Rules[r].IndexKey)
	}
	return globEscape(before) + "*" + globEscape(after)
}

// UIDFromIndexKey extracts the uid from one of rule r's index keys.
func (s *Schema) UIDFromIndexKey(r int, key string) (string, bool) {
	before, after, ok := strings.Cut(s.Rules[r].IndexKey, "{uid}")
	if !ok || len(key) < len(before)+len(after) || !strings.HasPrefix(key, before) || !strings.HasSuffix(key, after) {
		return "", false
	}
	return key[len(before) : len(key)-len(after)], true
}

// NumericUID reports whether uid can be a global-zset score: a decimal integer Redis and Lua
// both represent exactly.
func NumericUID(uid string) bool {
	n, err := strconv.ParseInt(uid, 10, 64)
	return err == nil && strconv.FormatInt(n, 10) == uid && n > -(1<<53) && n < 1<<53
}

func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}
