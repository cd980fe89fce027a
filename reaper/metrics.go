package reaper

import "github.com/prometheus/client_golang/prometheus"

type reaperMetrics struct {
	cleanups      *prometheus.CounterVec
	lag           *prometheus.HistogramVec
	ledger        *prometheus.GaugeVec
	stale         prometheus.Counter
	reconnects    prometheus.Counter
	configRefused prometheus.Counter
	notifications prometheus.Gauge
	evictedOwn    prometheus.Counter
	repairs       prometheus.Counter
}

func newReaperMetrics(reg prometheus.Registerer, notifications bool) *reaperMetrics {
	const ns, sub = "sessionproxy", "reaper"
	m := &reaperMetrics{
		cleanups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "cleanups_total", Help: "Expired or evicted sessions removed from the index, by path (event, sweep)."}, []string{"path"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "lag_seconds", Help: "Time from a session's deadline to its removal from the index, by path.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"path"}),
		ledger: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "ledger_entries", Help: "Sessions with a TTL in the deadline ledger, by DB (as of the last sweep)."}, []string{"db"}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "stale_entries_total", Help: "Due ledger entries whose session still existed (TTL extended behind the proxy) and were re-scored."}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "subscription_reconnects_total", Help: "Times the keyevent subscription was re-established."}),
		configRefused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "config_refused_total", Help: "Times Redis refused to enable keyspace notifications (the sweep then works alone)."}),
		notifications: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "notifications", Help: "1 while Redis publishes the expired and evicted keyevents the reaper follows (notify-keyspace-events, checked every 10 intervals); 0: it does not, expired sessions leave the index at the ledger sweep; -1: cannot tell (CONFIG refused). Absent with reaper.notifications off."}),
		evictedOwn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "evicted_bookkeeping_total", Help: "Evictions of the proxy's own index, ledger or owner-map keys."}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "eviction_repairs_total", Help: "Rule reindexes run after an eviction of bookkeeping keys."}),
	}
	for _, p := range []string{pathEvent, pathSweep} {
		m.cleanups.WithLabelValues(p)
		m.lag.WithLabelValues(p)
	}
	if reg != nil {
		reg.MustRegister(m.cleanups, m.lag, m.ledger, m.stale, m.reconnects, m.configRefused, m.evictedOwn, m.repairs)
		if notifications {
			reg.MustRegister(m.notifications)
		}
	}
	return m
}

type clusterMetrics struct {
	cleanups *prometheus.CounterVec
	reapLag  *prometheus.HistogramVec
	scripts  *prometheus.CounterVec
	changes  *prometheus.CounterVec
	lag      prometheus.Histogram
	leases   prometheus.Gauge
	catchUps prometheus.Counter
}

// newClusterMetrics: the cleanups and lag families are the standalone reaper's (one of the two
// runs in a process), so dashboards and alerts read both modes alike.
func newClusterMetrics(reg prometheus.Registerer) *clusterMetrics {
	const ns = "sessionproxy"
	m := &clusterMetrics{
		cleanups: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "reaper",
			Name: "cleanups_total", Help: "Expired or evicted sessions removed from the index, by path (event, sweep)."}, []string{"path"}),
		reapLag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "reaper",
			Name: "lag_seconds", Help: "Time from a session's deadline to its removal from the index, by path.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"path"}),
		scripts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "reaper",
			Name: "cluster_scripts_total", Help: "Cleanup scripts this proxy ran on a Redis Cluster, by path (event, sweep): one per slot and batch."}, []string{"path"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "index",
			Name: "cluster_changes_total", Help: "Outbox entries applied to index keys on a Redis Cluster, by result (made, skipped: a newer change was made already)."}, []string{"result"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Subsystem: "index",
			Name: "cluster_apply_lag_seconds", Help: "Time from a session write on a Redis Cluster to its index change being made (by Redis' clock at the write).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "reaper",
			Name: "cluster_leases", Help: "Primaries whose reaping (sweep, events, leftover outboxes) this proxy holds."}),
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "reaper",
			Name: "cluster_catchups_total", Help: "Index rebuilds run after a primary failover (its unreplicated index changes may be lost)."}),
	}
	for _, p := range []string{pathEvent, pathSweep} {
		m.cleanups.WithLabelValues(p)
		m.reapLag.WithLabelValues(p)
		m.scripts.WithLabelValues(p)
	}
	m.changes.WithLabelValues("made")
	m.changes.WithLabelValues("skipped")
	if reg != nil {
		reg.MustRegister(m.cleanups, m.reapLag, m.scripts, m.changes, m.lag, m.leases, m.catchUps)
	}
	return m
}
