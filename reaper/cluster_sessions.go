package reaper

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/sessionproxy/sessionproxy/internal/cluster"
	"github.com/sessionproxy/sessionproxy/rewrite"
)

// Sessions answers SESSIONS.LIST, COUNT and REVOKE (mode "list", "count", "revoke") for uid
// under rule r on a cluster. It first applies every outbox entry left on any primary, so that
// writes made through any proxy before the call are in the index; then it keeps the index
// entries whose session exists and is owned by uid (the owner map in the session's slot).
// REVOKE deletes those sessions one slot at a time (not atomic across slots), each through
// the slot script, and applies their index changes before it answers. list: the sorted session
// ids; count and revoke: n.
func (c *Cluster) Sessions(ctx context.Context, mode string, r int, uid string) (ids []string, n int64, err error) {
	if err := c.drainAll(ctx); err != nil {
		return nil, 0, err
	}
	keys, err := c.candidates(ctx, r, uid)
	if err != nil {
		return nil, 0, err
	}
	live, err := c.live(ctx, uid, keys)
	if err != nil {
		return nil, 0, err
	}
	switch mode {
	case "count":
		return nil, int64(len(live)), nil
	case "revoke":
		n, err := c.revoke(ctx, r, uid, live)
		return nil, n, err
	}
	sch := c.o.Schema
	ids = make([]string, len(live))
	for i, k := range live {
		ids[i] = sch.SessionID(r, k)
	}
	slices.Sort(ids)
	return ids, int64(len(ids)), nil
}

// drainAll applies the outbox entries left on every primary when it starts: the slots that have
// some then, each until its outbox is empty or was read 16 times (entries queued meanwhile by
// writes still running need not be waited for).
func (c *Cluster) drainAll(ctx context.Context) error {
	ps, err := c.primaries(ctx)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if len(p.slots) == 0 {
			continue
		}
		node, err := c.nodeClient(ctx, p.slots[0])
		if err != nil {
			return fmt.Errorf("reaper: node %s: %w", p.addr, err)
		}
		pending, err := c.slotsWith(ctx, node, "outbox", p.slots)
		if err == nil {
			err = c.drainFully(ctx, pending)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// drainFully drains slots until their outboxes are empty or were read 16 times.
func (c *Cluster) drainFully(ctx context.Context, slots []int) error {
	var err error
	for range 16 {
		if len(slots) == 0 {
			return nil
		}
		if slots, err = c.drain(ctx, slots); err != nil {
			return err
		}
	}
	return nil
}

// candidates reads uid's index key under rule r: the session keys it names.
func (c *Cluster) candidates(ctx context.Context, r int, uid string) ([]string, error) {
	sch := c.o.Schema
	rule := sch.Rules[r]
	ikey := sch.IndexKey(r, uid)
	var members []string
	var err error
	switch rule.Layout {
	case rewrite.LayoutSet:
		members, err = c.o.Client.SMembers(ctx, ikey).Result()
	case rewrite.LayoutZSet:
		members, err = c.o.Client.ZRange(ctx, ikey, 0, -1).Result()
	default:
		if !rewrite.NumericUID(uid) {
			return nil, nil
		}
		return c.o.Client.ZRangeByScore(ctx, ikey, &redis.ZRangeBy{Min: uid, Max: uid}).Result()
	}
	if err != nil {
		return nil, fmt.Errorf("reaper: index %s: %w", ikey, err)
	}
	keys := make([]string, len(members))
	for i, m := range members {
		keys[i] = sch.SessionKey(r, m)
	}
	return keys, nil
}

// live keeps the keys that exist and whose slot's owner map names uid.
func (c *Cluster) live(ctx context.Context, uid string, keys []string) ([]string, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	pipe := c.o.Client.Pipeline()
	exists := make([]*redis.IntCmd, len(keys))
	owners := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		exists[i] = pipe.Exists(ctx, k)
		owners[i] = pipe.HGet(ctx, c.bookOf(k)[bookOwners], k)
	}
	_, _ = pipe.Exec(ctx)
	var out []string
	for i, k := range keys {
		e, err := exists[i].Result()
		if err != nil {
			return nil, fmt.Errorf("reaper: session %s: %w", k, err)
		}
		o, err := owners[i].Result()
		if err != nil && err != redis.Nil {
			return nil, fmt.Errorf("reaper: owner of %s: %w", k, err)
		}
		if e == 1 && o == uid {
			out = append(out, k)
		}
	}
	return out, nil
}

// revoke deletes keys (sessions of rule r) that are still uid's, one revoke.lua call per slot,
// and applies their index changes; it returns how many it deleted.
func (c *Cluster) revoke(ctx context.Context, r int, uid string, keys []string) (int64, error) {
	groups := bySlot(keys)
	calls := make([]call, len(groups))
	slots := make([]int, len(groups))
	for i, g := range groups {
		calls[i] = c.slotCall(c.revokeSc, g, r, uid)
		slots[i] = cluster.Slot([]byte(g[0]))
	}
	var n int64
	for i, res := range c.run(ctx, calls) {
		if res.err != nil {
			return n, fmt.Errorf("reaper: revoking in slot %d: %w", slots[i], res.err)
		}
		d, _ := res.val.(int64)
		n += d
	}
	return n, c.drainFully(ctx, slots)
}
