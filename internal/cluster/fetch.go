package cluster

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Fetch asks the node at addr for CLUSTER SLOTS; node gives what the nodes need (AUTH, TLS,
// timeouts), its Addr and DB are ignored.
func Fetch(ctx context.Context, addr string, node redis.Options) ([]Range, error) {
	o := node
	o.Addr, o.DB, o.Protocol, o.DisableIdentity, o.PoolSize, o.MaxRetries = addr, 0, 2, true, 1, -1
	c := redis.NewClient(&o)
	defer c.Close()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: CLUSTER SLOTS at %s: %w", addr, err)
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
