// Package netturn lets a goroutine wait for a turn of Go's network poller (Yield): loops that
// start work in bursts (the proxy's accept loop, its closer, the client Poller) wait there every
// few items, so that the run queue drains and the connections already there are served between
// the items, as an event loop serves every ready descriptor once a turn.
package netturn
