// Package reaper keeps the session index clean behind the clients' backs: it repairs the index
// from the session keys themselves (SESSIONS.REINDEX / CHECK, `sessionproxy reindex|check`)
// and, running inside the proxy process, removes expired and evicted sessions from it.
//
// It talks to Redis with go-redis and runs the scripts the rewrite package generates; every
// step is one atomic, idempotent script over a bounded batch, so it is safe while traffic flows
// and when several proxies share one Redis. Reapers find each other through presence channels:
// one alone leads without writing, several elect one through a lease key.
// It must not import proxy.
package reaper
