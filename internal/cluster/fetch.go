package cluster

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Fetch asks the node at addr for CLUSTER SLOTS on a client of its own; node gives what the
// nodes need (AUTH, TLS, timeouts), its Addr and DB are ignored. For repeated reads, FetchWith
// a client kept per node (internal/nodes).
func Fetch(ctx context.Context, addr string, node redis.Options) ([]Range, error) {
	o := node
	o.Addr, o.DB, o.Protocol, o.DisableIdentity, o.PoolSize, o.MaxRetries = addr, 0, 2, true, 1, -1
	c := redis.NewClient(&o)
	defer c.Close()
	return FetchWith(ctx, c)
}

// FetchWith asks the node c talks to for CLUSTER SLOTS.
func FetchWith(ctx context.Context, c *redis.Client) ([]Range, error) {
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: CLUSTER SLOTS at %s: %w", c.Options().Addr, err)
	}
	ranges := make([]Range, 0, len(slots))
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		r := Range{Start: s.Start, End: s.End, Primary: s.Nodes[0].Addr}
		for _, n := range s.Nodes[1:] {
			r.Replicas = append(r.Replicas, n.Addr)
		}
		ranges = append(ranges, r)
	}
	return ranges, nil
}
