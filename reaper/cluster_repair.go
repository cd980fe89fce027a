package reaper

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// Repair checks (fix=false) or rebuilds (fix=true) rule r's index on a cluster, primary by
// primary, in batches of Batch keys: SESSIONS.CHECK and SESSIONS.REINDEX there.
//  1. Every session key of every primary against its owner map entry and index entry
//     (missing); a rebuild queues every owned session's index entry again.
//  2. Every index key of every primary against the sessions it names (stale); a rebuild
//     removes those entries, ordered after the session slot's writes so far (its seq).
//  3. Every slot's owner map and ledger against the sessions (orphans); a rebuild reconciles
//     them.
//
// A rebuild then applies the outboxes before it returns.
func (c *Cluster) Repair(ctx context.Context, r int, fix bool) (rewrite.Report, error) {
	start := time.Now()
	sch := c.o.Schema
	rep := rewrite.Report{Rule: sch.Rules[r].Name}
	ps, err := c.primaries(ctx)
	if err != nil {
		return rep, err
	}
	for _, p := range ps {
		if len(p.slots) == 0 {
			continue
		}
		node, err := c.nodeClient(ctx, p.slots[0])
		if err != nil {
			return rep, fmt.Errorf("reaper: node %s: %w", p.addr, err)
		}
		if err := c.repairNode(ctx, node, r, fix, &rep); err != nil {
			return rep, fmt.Errorf("reaper: repair on %s: %w", p.addr, err)
		}
	}
	if fix {
		if err := c.drainAll(ctx); err != nil {
			return rep, err
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// repairNode runs the three steps of Repair over one primary's keys.
func (c *Cluster) repairNode(ctx context.Context, node *redis.Client, r int, fix bool, rep *rewrite.Report) error {
	sch, batch := c.o.Schema, c.o.Batch
	own := func(keys []string) []string {
		out := keys[:0:0]
		for _, k := range keys {
			if sch.Match([]byte(k)) == r {
				out = append(out, k)
			}
		}
		return out
	}
	// 1. Sessions -> index.
	err := scanKeys(ctx, node, sch.ScanPattern(r), "", batch, func(keys []string) error {
		keys = own(keys)
		rep.Scanned += len(keys)
		if fix {
			n, err := c.resync(ctx, keys, r, true)
			rep.Fixed += n
			return err
		}
		states, err := c.states(ctx, keys, r)
		if err != nil {
			return err
		}
		var indexed []string
		for _, k := range keys {
			st := states[k]
			switch {
			case st.owner == "":
			case st.recorded != st.owner:
				rep.Missing++
			default:
				indexed = append(indexed, k)
			}
		}
		n, err := c.notIndexed(ctx, r, indexed, states)
		rep.Missing += n
		return err
	})
	if err != nil {
		return fmt.Errorf("scan sessions: %w", err)
	}
	// 2. Index -> sessions.
	if err := c.indexEntries(ctx, node, r, func(ikey string, entries [][2]string) error {
		keys := make([]string, len(entries))
		for i, e := range entries {
			keys[i] = e[0]
		}
		states, err := c.states(ctx, keys, r)
		if err != nil {
			return err
		}
		var calls []call
		for _, e := range entries {
			k, uid := e[0], e[1]
			if st := states[k]; st.owner != uid {
				rep.Stale++
				calls = append(calls, c.indexChange(ikey, st.seq, "r", r+1, "-", uid, k))
			}
		}
		if !fix {
			return nil
		}
		for _, res := range c.run(ctx, calls) {
			if res.err != nil {
				return res.err
			}
			if n, _ := res.val.(int64); n == 1 {
				rep.Fixed++
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("scan index: %w", err)
	}
	// 3. Owner maps and ledgers: entries of sessions that are gone, re-owned or without TTL.
	for _, kind := range []struct {
		pattern string
		zset    bool
	}{{globEscape(sch.Prefix) + "{*}:owners", false}, {globEscape(sch.Prefix) + "{*}:deadlines", true}} {
		err := scanKeys(ctx, node, kind.pattern, "", batch, func(books []string) error {
			for _, b := range books {
				if err := scanFields(ctx, node, b, kind.zset, batch, func(keys []string) error {
					keys = own(keys)
					if fix {
						n, err := c.resync(ctx, keys, r, false)
						rep.Fixed += n
						return err
					}
					states, err := c.states(ctx, keys, r)
					if err != nil {
						return err
					}
					for _, k := range keys {
						st := states[k]
						if (!kind.zset && st.recorded != st.owner) || (kind.zset && (st.owner == "" || st.deadline == 0)) {
							rep.Orphans++
						}
					}
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("scan bookkeeping: %w", err)
		}
	}
	return nil
}

// keyState is what state.lua reads of one session key.
type keyState struct {
	owner, recorded string // in the value; in the owner map
	deadline        int64
	seq             string // the slot's last seq
}

// bySlot groups keys by their slot, in first-seen order.
func bySlot(keys []string) [][]string {
	var groups [][]string
	at := map[int]int{}
	for _, k := range keys {
		s := cluster.Slot([]byte(k))
		i, ok := at[s]
		if !ok {
			i = len(groups)
			at[s] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], k)
	}
	return groups
}

// slotCall is a slot script's call over keys of one slot of rule r: the keys, then the slot's
// bookkeeping; ARGV the rule of each key, then extra.
func (c *Cluster) slotCall(sc *redis.Script, keys []string, r int, extra ...any) call {
	book := c.bookOf(keys[0])
	args := make([]any, 0, len(keys)+len(extra))
	for range keys {
		args = append(args, r+1)
	}
	return call{sc, append(append([]string(nil), keys...), book[:]...), append(args, extra...)}
}

// states reads the state of keys (rule r), one state.lua call per slot, in one pipeline.
func (c *Cluster) states(ctx context.Context, keys []string, r int) (map[string]keyState, error) {
	groups := bySlot(keys)
	calls := make([]call, len(groups))
	for i, g := range groups {
		calls[i] = c.slotCall(c.state, g, r)
	}
	out := make(map[string]keyState, len(keys))
	for i, res := range c.run(ctx, calls) {
		vs, ok := res.val.([]any)
		if res.err != nil || !ok || len(vs) != 1+3*len(groups[i]) {
			return nil, errors.Join(errors.New("reaper: reading session state"), res.err)
		}
		seq := fmt.Sprint(vs[0])
		for j, k := range groups[i] {
			d, _ := vs[3+3*j].(int64)
			out[k] = keyState{owner: fmt.Sprint(vs[1+3*j]), recorded: fmt.Sprint(vs[2+3*j]), deadline: d, seq: seq}
		}
	}
	return out, nil
}

// resync runs resync.lua over keys (rule r), one call per slot; force queues every owned
// session's index entry again. It returns the changes queued; the caller drains them.
func (c *Cluster) resync(ctx context.Context, keys []string, r int, force bool) (int, error) {
	groups := bySlot(keys)
	calls := make([]call, len(groups))
	f := "0"
	if force {
		f = "1"
	}
	for i, g := range groups {
		calls[i] = c.slotCall(c.resyncSc, g, r, f)
	}
	n := 0
	for i, res := range c.run(ctx, calls) {
		if res.err != nil {
			return n, res.err
		}
		d, _ := res.val.(int64)
		n += int(d)
		c.Dirty(cluster.Slot([]byte(groups[i][0])))
	}
	return n, nil
}

// notIndexed counts the keys (owned, as states say) whose index entry is absent or, for a zset
// layout, scored with another deadline.
func (c *Cluster) notIndexed(ctx context.Context, r int, keys []string, states map[string]keyState) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	sch := c.o.Schema
	rule := sch.Rules[r]
	pipe := c.o.Client.Pipeline()
	cmds := make([]redis.Cmder, len(keys))
	for i, k := range keys {
		uid := states[k].owner
		switch rule.Layout {
		case rewrite.LayoutSet:
			cmds[i] = pipe.SIsMember(ctx, sch.IndexKey(r, uid), sch.SessionID(r, k))
		case rewrite.LayoutZSet:
			cmds[i] = pipe.ZScore(ctx, sch.IndexKey(r, uid), sch.SessionID(r, k))
		default:
			cmds[i] = pipe.ZScore(ctx, rule.IndexKey, k)
		}
	}
	_, _ = pipe.Exec(ctx)
	n := 0
	for i, k := range keys {
		st := states[k]
		var found bool
		switch cmd := cmds[i].(type) {
		case *redis.BoolCmd:
			found = cmd.Val()
		case *redis.FloatCmd:
			v, err := cmd.Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return n, err
			}
			switch {
			case err != nil:
			case rule.Layout == rewrite.LayoutZSet && st.deadline == 0:
				found = v > 1e300 // +inf
			case rule.Layout == rewrite.LayoutZSet:
				found = int64(v) == st.deadline
			default:
				found = strconv.FormatInt(int64(v), 10) == st.owner
			}
		}
		if cmds[i].Err() != nil && !errors.Is(cmds[i].Err(), redis.Nil) {
			return n, cmds[i].Err()
		}
		if !found {
			n++
		}
	}
	return n, nil
}

// indexEntries walks rule r's index keys on node and passes their entries in batches as
// (session key, uid) pairs.
func (c *Cluster) indexEntries(ctx context.Context, node *redis.Client, r int, each func(ikey string, entries [][2]string) error) error {
	sch, batch := c.o.Schema, c.o.Batch
	rule := sch.Rules[r]
	if rule.Layout == rewrite.LayoutGlobalZSet {
		if n, err := node.Exists(ctx, rule.IndexKey).Result(); err != nil || n == 0 {
			return err // on another node, or absent
		}
		var cursor uint64
		for {
			kv, next, err := node.ZScan(ctx, rule.IndexKey, cursor, "", int64(batch)).Result()
			if err != nil {
				return err
			}
			var entries [][2]string
			for i := 0; i+1 < len(kv); i += 2 {
				entries = append(entries, [2]string{kv[i], kv[i+1]})
			}
			if len(entries) > 0 {
				if err := each(rule.IndexKey, entries); err != nil {
					return err
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	typ := "set"
	if rule.Layout == rewrite.LayoutZSet {
		typ = "zset"
	}
	return scanKeys(ctx, node, sch.IndexScanPattern(r), typ, batch, func(keys []string) error {
		for _, ikey := range keys {
			uid, ok := sch.UIDFromIndexKey(r, ikey)
			if !ok {
				continue
			}
			if err := scanMembers(ctx, node, ikey, typ == "zset", batch, func(members []string) error {
				entries := make([][2]string, len(members))
				for i, m := range members {
					entries[i] = [2]string{sch.SessionKey(r, m), uid}
				}
				return each(ikey, entries)
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

// scanFields pages through a hash's fields (HSCAN) or a sorted set's members (ZSCAN).
func scanFields(ctx context.Context, c redis.Cmdable, key string, zset bool, batch int, each func([]string) error) error {
	if zset {
		return scanMembers(ctx, c, key, true, batch, each)
	}
	var cursor uint64
	for {
		kv, next, err := c.HScan(ctx, key, cursor, "", int64(batch)).Result()
		if err != nil {
			return err
		}
		var fields []string
		for i := 0; i+1 < len(kv); i += 2 {
			fields = append(fields, kv[i])
		}
		if len(fields) > 0 {
			if err := each(fields); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}
