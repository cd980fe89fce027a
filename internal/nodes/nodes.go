// Package nodes keeps one go-redis client per Redis node address for the proxy's own questions
// to nodes it learns of at run time (ROLE of a master a sentinel names, CLUSTER SLOTS of a
// cluster node). A client per question would open a connection each time, and a poll every
// second or every few seconds would show in the node's stats as a stream of new clients.
package nodes

import (
	"sync"

	"github.com/redis/go-redis/v9"
)

// Clients hands out the client for an address, made on first use from a template.
type Clients struct {
	tmpl redis.Options
	mu   sync.Mutex
	m    map[string]*redis.Client
}

// New returns a cache whose clients use node's options (AUTH, TLS, timeouts); its Addr and DB
// are ignored. The clients speak RESP2, send no identity and do not retry.
func New(node redis.Options) *Clients {
	node.DB, node.Protocol, node.DisableIdentity, node.PoolSize, node.MaxRetries = 0, 2, true, 1, -1
	return &Clients{tmpl: node, m: map[string]*redis.Client{}}
}

// Get returns the client for addr.
func (cs *Clients) Get(addr string) *redis.Client {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c := cs.m[addr]
	if c == nil {
		o := cs.tmpl
		o.Addr = addr
		c = redis.NewClient(&o)
		cs.m[addr] = c
	}
	return c
}

// Close closes every client.
func (cs *Clients) Close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for a, c := range cs.m {
		_ = c.Close()
		delete(cs.m, a)
	}
}
