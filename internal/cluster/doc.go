// Package cluster holds what routing to a Redis Cluster needs that is pure logic: the slot of
// a key (CRC16 of the key or of its hash tag, modulo 16384, as Redis computes it) and the map
// from slots to nodes read from CLUSTER SLOTS. It does no I/O of its own; the proxy's upstream
// layer asks the nodes and hands the replies here.
package cluster
