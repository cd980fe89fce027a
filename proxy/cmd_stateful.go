package proxy

// Commands that hold or depend on the state of one upstream connection: they move the client to
// a dedicated connection. Pub/sub and MONITOR stream replies; MULTI and WATCH keep a transaction
// on the connection; blocking commands would stall every client sharing it.
var statefulFamily = family{
	{name: "subscribe", route: routeDedicated, track: (*dedicated).trackSubscribe},
	{name: "psubscribe", route: routeDedicated, track: (*dedicated).trackSubscribe},
	{name: "ssubscribe", route: routeDedicated, track: (*dedicated).trackSubscribe},
	{name: "monitor", route: routeDedicated, track: (*dedicated).trackPushes},
	// Outside a subscription these still answer once per channel named: not one reply per
	// command, so they cannot share a connection.
	{name: "unsubscribe", route: routeDedicated, track: (*dedicated).trackUnsubscribe},
	{name: "punsubscribe", route: routeDedicated, track: (*dedicated).trackUnsubscribe},
	{name: "sunsubscribe", route: routeDedicated, track: (*dedicated).trackUnsubscribe},
	{name: "multi", route: routeDedicated, track: (*dedicated).trackMulti},
	// Outside MULTI Redis answers these itself (an error); inside, they end the transaction.
	{name: "exec", track: (*dedicated).trackExec},
	{name: "discard", track: (*dedicated).trackDiscard},
	{name: "watch", route: routeDedicated},
	{name: "blpop", route: routeDedicated},
	{name: "brpop", route: routeDedicated},
	{name: "brpoplpush", route: routeDedicated},
	{name: "blmove", route: routeDedicated},
	{name: "blmpop", route: routeDedicated},
	{name: "bzpopmin", route: routeDedicated},
	{name: "bzpopmax", route: routeDedicated},
	{name: "bzmpop", route: routeDedicated},
	{name: "wait", route: routeDedicated},
	{name: "xread", classify: classifyStreamRead},
	{name: "xreadgroup", classify: classifyStreamRead},
	// Replication streams never pair replies with commands.
	{name: "sync", route: routeDedicated, track: (*dedicated).trackReplication},
	{name: "psync", route: routeDedicated, track: (*dedicated).trackReplication},
	{name: "replconf", route: routeDedicated},
	// Cluster connection flags.
	{name: "readonly", route: routeDedicated},
	{name: "readwrite", route: routeDedicated},
	{name: "asking", route: routeDedicated},
}

// classifyStreamRead sends XREAD/XREADGROUP with BLOCK (before STREAMS) to a dedicated connection.
func classifyStreamRead(args [][]byte) route {
	for _, a := range args[1:] {
		if equalFold(a, "STREAMS") {
			break
		}
		if equalFold(a, "BLOCK") {
			return routeDedicated
		}
	}
	return routeShared
}
