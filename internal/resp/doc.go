// Package resp frames the Redis protocol for the proxy without decoding it.
//
// It owns two byte-level jobs: normalizing what clients send (request.go: Redis 7's own parsing
// rules, limits and error texts, so the client side behaves like redis-server) and finding reply
// boundaries in what Redis sends back (reply.go: replies are copied raw, never decoded and
// re-encoded). It does no I/O policy of its own: no dialing, no pooling, no command semantics.
package resp
