// Package sentinel follows the master of a Redis Sentinel deployment for the proxy's data path.
//
// A Watcher asks the sentinels for the address of the master they monitor (SENTINEL
// get-master-addr-by-name), checks with ROLE that the node it names really is a master (a
// sentinel can still name a dead or demoted one while a failover is in progress), and then
// follows it: every sentinel's +switch-master message starts a new look at once, and a poll
// every second covers a message lost on the way (sentinel pub/sub is fire-and-forget, like
// Redis' own). A change calls OnSwitch with the new address. The proxy's own go-redis clients
// (reaper, repair) follow the master through go-redis' failover client instead.
package sentinel
