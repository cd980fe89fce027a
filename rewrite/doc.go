// Package rewrite is sessionproxy's key schema and pure planning: it decides which commands
// write session keys and turns each into one server-side step (a Lua script run by SHA) that
// performs the original command and keeps the user -> sessions index, the owner map and the
// deadline ledger in step with it.
//
// It does no I/O and imports no project package: arguments in, command bytes out. The proxy runs
// the plans; the reaper and the repair tools run the other scripts it generates. Keeping planning
// pure is what lets one atomic step later be split into per-slot steps for Redis Cluster.
package rewrite
