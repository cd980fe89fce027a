// Package proxy is sessionproxy's client side: a redcon server that speaks to clients as if it
// were Redis and carries their commands upstream.
//
// It owns the per-connection state (DB, ACL identity, name), the command table that routes each
// command (shared, local, dedicated), the shared upstream connections that coalesce the commands
// of many clients into single writes, the dedicated connections of clients in a stateful mode,
// and the metrics of all that. Replies are relayed raw, never decoded and re-encoded.
//
// It must not import conf (cmd turns the config into Options) or reaper, and it keeps no global
// state: everything hangs off a Server.
package proxy
