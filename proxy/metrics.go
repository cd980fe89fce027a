package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sessionproxy/sessionproxy/internal/resp"
)

// metrics are the proxy's Prometheus series. Counters for commands are resolved once per table
// row so the hot path only does atomic adds.
type metrics struct {
	clients            prometheus.Gauge
	clientsTotal       prometheus.Counter
	rejected           *prometheus.CounterVec
	disconnected       *prometheus.CounterVec
	denied             prometheus.Counter
	commands           []prometheus.Counter // by cmdSpec.idx
	errors             *prometheus.CounterVec
	bytesIn            prometheus.Counter
	bytesOut           prometheus.Counter
	upstreamRTT        prometheus.Histogram
	upstreamDials      prometheus.Counter
	upstreamDialErrors prometheus.Counter
	upstreamFailures   prometheus.Counter
	scriptHolds        prometheus.Counter
	dedicated          prometheus.Gauge
	dedicatedRefused   prometheus.Counter
	rewrites           *prometheus.CounterVec
	unindexed          prometheus.Counter
	noScriptRetries    prometheus.Counter
	redirects          *prometheus.CounterVec // cluster mode: -MOVED / -ASK followed
	slotMaps           prometheus.Counter     // cluster mode: slot maps read
	repairs            *prometheus.CounterVec // SESSIONS.CHECK / REINDEX runs, by mode
	repairFound        *prometheus.CounterVec // what they found wrong, by kind
	repairFixed        prometheus.Counter     // index entries REINDEX added or removed
}

func newMetrics(reg prometheus.Registerer, table *commandTable, input *resp.Budget) *metrics {
	const ns = "sessionproxy"
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "client",
			Name: "connections", Help: "Client connections currently open."}),
		clientsTotal: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
			Name: "accepted_connections_total", Help: "Client connections accepted (the gauge sessionproxy_client_connections counts those open)."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
			Name: "rejected_total", Help: "Client connections refused, by reason."}, []string{"reason"}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
			Name: "denied_commands_total", Help: "Commands refused because clients.deny_commands names them."}),
		disconnected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
			Name: "disconnected_total", Help: "Client connections the proxy ended for a limit, by limit (idle_timeout, output_buffer, input_memory)."}, []string{"reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
			Name: "errors_total", Help: "Errors the proxy itself answered or hit, by kind."}, []string{"kind"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
			Name: "read_bytes_total", Help: "Command bytes received from clients."}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
			Name: "written_bytes_total", Help: "Reply bytes sent to clients: relayed from Redis and the proxy's own."}),
		upstreamRTT: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "upstream",
			Name: "roundtrip_seconds", Help: "Time from sending a client's batch on a shared upstream connection to its last reply.",
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16)}),
		upstreamDials: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "upstream",
			Name: "dials_total", Help: "Upstream connections opened (shared and dedicated)."}),
		upstreamDialErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "upstream",
			Name: "dial_errors_total", Help: "Upstream connection attempts that failed."}),
		upstreamFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "upstream",
			Name: "connection_failures_total", Help: "Shared upstream connections that broke while in use."}),
		scriptHolds: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "upstream",
			Name: "script_holds_total", Help: "Shared upstream connections replaced because other clients' commands waited behind a long script call."}),
		dedicated: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "upstream",
			Name: "dedicated_connections", Help: "Clients currently holding a dedicated upstream connection."}),
		dedicatedRefused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "upstream",
			Name: "dedicated_refused_total", Help: "Commands refused a dedicated upstream connection: limits.max_dedicated clients held one."}),
	}
	m.rewrites = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "index",
		Name: "rewrites_total", Help: "Commands rewritten into index scripts, by script (apply: session writes, sessions: SESSIONS.LIST/COUNT/REVOKE)."}, []string{"script"})
	m.unindexed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "index",
		Name: "unindexed_writes_total", Help: "Session writes the proxy passed on without indexing (non-numeric user id under global-zset, too many arguments)."})
	m.noScriptRetries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "index",
		Name: "noscript_retries_total", Help: "Batches whose script calls met an emptied script cache and were retried after reloading."})
	m.redirects = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "cluster",
		Name: "redirects_total", Help: "Cluster mode: -MOVED and -ASK replies the proxy followed, and -TRYAGAIN replies to session writes it sent again, by kind (moved, ask, tryagain)."}, []string{"kind"})
	m.slotMaps = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "cluster",
		Name: "slot_map_reads_total", Help: "Cluster mode: slot maps read (CLUSTER SLOTS), at start, periodically and after -MOVED."})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "index",
		Name: "repairs_total", Help: "SESSIONS.CHECK and SESSIONS.REINDEX commands run through the proxy, by mode (check, reindex)."}, []string{"mode"})
	m.repairFound = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "index",
		Name: "repair_found_total", Help: "What SESSIONS.CHECK and SESSIONS.REINDEX found wrong (REINDEX: before fixing it), by kind (missing, stale, orphans): the drift, as their reports give it."}, []string{"kind"})
	m.repairFixed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "index",
		Name: "repair_fixed_total", Help: "Index entries SESSIONS.REINDEX added or removed."})
	for _, mode := range []string{"check", "reindex"} {
		m.repairs.WithLabelValues(mode)
	}
	for _, kind := range []string{"missing", "stale", "orphans"} {
		m.repairFound.WithLabelValues(kind)
	}
	m.redirects.WithLabelValues("moved")
	m.redirects.WithLabelValues("ask")
	m.redirects.WithLabelValues("tryagain")
	m.rewrites.WithLabelValues("apply")
	m.rewrites.WithLabelValues("sessions")
	cmds := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "client",
		Name: "commands_total", Help: "Commands received, by name (unknown names count as \"other\")."}, []string{"cmd"})
	for _, s := range table.specs {
		m.commands = append(m.commands, cmds.WithLabelValues(s.name))
	}
	for _, kind := range []string{errKindProtocol, errKindUpstream, errKindInternal} {
		m.errors.WithLabelValues(kind)
	}
	m.rejected.WithLabelValues(rejectMaxClients)
	m.rejected.WithLabelValues(rejectProtected)
	m.rejected.WithLabelValues(rejectTLS)
	m.disconnected.WithLabelValues(closeIdle)
	m.disconnected.WithLabelValues(closeOutput)
	m.disconnected.WithLabelValues(closeInputMemory)
	inputHeld := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: "client",
		Name: "input_held_bytes", Help: "Bytes of large incomplete client commands the proxy holds (clients.input_memory_limit bounds them)."},
		func() float64 { return float64(input.Used()) })
	if reg != nil {
		reg.MustRegister(inputHeld)
		reg.MustRegister(m.clients, m.clientsTotal, m.rejected, m.disconnected, m.denied, cmds, m.errors, m.bytesIn, m.bytesOut,
			m.upstreamRTT, m.upstreamDials, m.upstreamDialErrors, m.upstreamFailures, m.scriptHolds, m.dedicated, m.dedicatedRefused,
			m.rewrites, m.unindexed, m.noScriptRetries, m.redirects, m.slotMaps, m.repairs, m.repairFound, m.repairFixed)
	}
	return m
}

// Label values of the errors and rejected series.
const (
	errKindProtocol  = "protocol"
	errKindUpstream  = "upstream"
	errKindInternal  = "internal" // a bug: a panic caught while handling a client
	rejectMaxClients = "max_clients"
	rejectProtected  = "protected_mode"
	rejectTLS        = "tls_handshake" // a TLS listener's connection that never completed one
	closeIdle        = "idle_timeout"
	closeOutput      = "output_buffer" // more replies held than OutputBufferLimit
	closeInputMemory = "input_memory"  // its incomplete command took all clients' past InputMemoryLimit
)
