package reaper

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/rewrite"
)

// DefaultBatch is how many keys one repair step handles: small enough that each script stays
// well under a millisecond or two of Redis time, so other clients are never held up for long.
const DefaultBatch = 256

// Repairer compares or rebuilds the index of one DB from its session keys.
type Repairer struct {
	Schema *rewrite.Schema
	Batch  int // keys per step; DefaultBatch if 0
	// Progress, if set, is called after each step over the sessions with how many were
	// scanned so far (sessionproxy reindex/check show it on a terminal).
	Progress func(scanned int)

	reconcile, prune, check *redis.Script
}

// NewRepairer prepares the repair scripts of schema.
func NewRepairer(schema *rewrite.Schema, batch int) *Repairer {
	sc := schema.Scripts()
	return &Repairer{Schema: schema, Batch: batch,
		reconcile: redis.NewScript(sc.Reconcile.Body), prune: redis.NewScript(sc.Prune.Body),
		check: redis.NewScript(sc.Check.Body)}
}

// Run checks (fix=false) or rebuilds (fix=true) rule r's index in the DB rdb is connected to:
// every session key is reconciled with its index entry, then every index entry is checked
// against its session. Each step is one script over at most Batch keys. A rebuild checks first,
// in a pass of its own, so that its report says what was wrong as a check would have (fixing
// one thing can mend another: an orphaned owner-map entry takes its ledger entry with it).
func (p *Repairer) Run(ctx context.Context, rdb redis.Cmdable, r int, fix bool) (rewrite.Report, error) {
	start := time.Now()
	rep, err := p.pass(ctx, rdb, r, false)
	if err == nil && fix {
		var fixed rewrite.Report
		fixed, err = p.pass(ctx, rdb, r, true)
		rep.Fixed = fixed.Fixed
	}
	rep.Duration = time.Since(start)
	return rep, err
}

// pass is one check (fix=false: counts what is wrong) or fix (fix=true: counts Fixed) pass.
func (p *Repairer) pass(ctx context.Context, rdb redis.Cmdable, r int, fix bool) (rewrite.Report, error) {
	rep := rewrite.Report{Rule: p.Schema.Rules[r].Name}
	batch := p.Batch
	if batch <= 0 {
		batch = DefaultBatch
	}
	rules := make([]any, 0, batch)
	// step checks keys with the check script of kind (what is wrong, counted in *wrong), or
	// when fixing repairs them with fixer.
	step := func(kind string, keys []string, args []any, wrong *int, fixer *redis.Script, countFixed bool) error {
		if fix {
			n, err := fixer.Run(ctx, rdb, keys, args...).Int()
			if countFixed {
				rep.Fixed += n
			}
			return err
		}
		bad, err := p.check.Run(ctx, rdb, keys, append([]any{kind}, args...)...).StringSlice()
		*wrong += len(bad)
		return err
	}
	// 1. Sessions -> index: missing entries (and, when fixing, every stale detail of them).
	err := scanKeys(ctx, rdb, p.Schema.ScanPattern(r), "", batch, func(keys []string) error {
		keys = p.own(keys, r)
		if len(keys) == 0 {
			return nil
		}
		rep.Scanned += len(keys)
		if p.Progress != nil {
			p.Progress(rep.Scanned)
		}
		rules = ruleArgs(rules, len(keys), r)
		return step("keys", keys, rules, &rep.Missing, p.reconcile, true)
	})
	if err != nil {
		return rep, fmt.Errorf("reaper: scan sessions: %w", err)
	}
	// 2. Index -> sessions: stale entries.
	if err := p.indexEntries(ctx, rdb, r, batch, func(ikey, uid string, members []string) error {
		args := []any{r + 1, uid}
		for _, m := range members {
			args = append(args, m)
		}
		return step("index", []string{ikey}, args, &rep.Stale, p.prune, true)
	}); err != nil {
		return rep, fmt.Errorf("reaper: scan index: %w", err)
	}
	// 3. The owner map: sessions that are gone or re-owned but still recorded (their index
	// entries were handled above; this clears the owner map and ledger).
	if err := p.ownerMap(ctx, rdb, r, batch, func(keys []string) error {
		rules = ruleArgs(rules, len(keys), r)
		return step("owners", keys, rules, &rep.Orphans, p.reconcile, true)
	}); err != nil {
		return rep, fmt.Errorf("reaper: scan owner map: %w", err)
	}
	// 4. The ledger: entries whose session is gone or lost its owner or TTL.
	if err := scanMembers(ctx, rdb, p.Schema.LedgerKey(), true, batch, func(entries []string) error {
		keys := p.own(entries, r)
		if len(keys) == 0 {
			return nil
		}
		rules = ruleArgs(rules, len(keys), r)
		return step("ledger", keys, rules, &rep.Orphans, p.reconcile, false)
	}); err != nil {
		return rep, fmt.Errorf("reaper: scan ledger: %w", err)
	}
	return rep, nil
}

// ruleArgs fills args with n copies of rule r's script number (1-based), one per key.
func ruleArgs(args []any, n, r int) []any {
	args = args[:0]
	for range n {
		args = append(args, r+1)
	}
	return args
}

// own keeps the keys that rule r owns (SCAN MATCH may also return keys of an earlier rule).
func (p *Repairer) own(keys []string, r int) []string {
	out := keys[:0]
	for _, k := range keys {
		if p.Schema.Match([]byte(k)) == r {
			out = append(out, k)
		}
	}
	return out
}

// indexEntries walks rule r's index keys and passes their members in batches.
func (p *Repairer) indexEntries(ctx context.Context, c redis.Cmdable, r, batch int, each func(ikey, uid string, members []string) error) error {
	rule := p.Schema.Rules[r]
	if rule.Layout == rewrite.LayoutGlobalZSet {
		return scanMembers(ctx, c, rule.IndexKey, true, batch, func(members []string) error {
			return each(rule.IndexKey, "", members)
		})
	}
	typ := "set"
	if rule.Layout == rewrite.LayoutZSet {
		typ = "zset"
	}
	return scanKeys(ctx, c, p.Schema.IndexScanPattern(r), typ, batch, func(keys []string) error {
		for _, ikey := range keys {
			uid, ok := p.Schema.UIDFromIndexKey(r, ikey)
			if !ok {
				continue
			}
			if err := scanMembers(ctx, c, ikey, typ == "zset", batch, func(members []string) error {
				return each(ikey, uid, members)
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

// ownerMap walks the owner map's session keys of rule r in batches.
func (p *Repairer) ownerMap(ctx context.Context, c redis.Cmdable, r, batch int, each func(keys []string) error) error {
	return scanFields(ctx, c, p.Schema.OwnersKey(), false, batch, func(fields []string) error {
		if keys := p.own(fields, r); len(keys) > 0 {
			return each(keys)
		}
		return nil
	})
}

// scanKeys runs SCAN MATCH pattern [TYPE typ] to the end, passing each non-empty page.
func scanKeys(ctx context.Context, c redis.Cmdable, pattern, typ string, batch int, each func([]string) error) error {
	var cursor uint64
	for {
		var keys []string
		var err error
		if typ == "" {
			keys, cursor, err = c.Scan(ctx, cursor, pattern, int64(batch)).Result()
		} else {
			keys, cursor, err = c.ScanType(ctx, cursor, pattern, int64(batch), typ).Result()
		}
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := each(keys); err != nil {
				return err
			}
		}
		if cursor == 0 {
			return ctx.Err()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// scanMembers pages through a set or sorted set with SSCAN/ZSCAN.
func scanMembers(ctx context.Context, c redis.Cmdable, key string, zset bool, batch int, each func([]string) error) error {
	var cursor uint64
	for {
		var page []string
		var err error
		if zset {
			var kv []string
			kv, cursor, err = c.ZScan(ctx, key, cursor, "", int64(batch)).Result()
			for i := 0; i < len(kv); i += 2 {
				page = append(page, kv[i])
			}
		} else {
			page, cursor, err = c.SScan(ctx, key, cursor, "", int64(batch)).Result()
		}
		if err != nil {
			if errors.Is(err, redis.Nil) {
				return nil
			}
			return err
		}
		if len(page) > 0 {
			if err := each(page); err != nil {
				return err
			}
		}
		if cursor == 0 {
			return nil
		}
	}
}
