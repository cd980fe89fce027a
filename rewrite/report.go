package rewrite

import "time"

// Report is the outcome of a SESSIONS.CHECK or SESSIONS.REINDEX run over one rule in one DB.
type Report struct {
	Rule     string
	Scanned  int // session keys seen
	Missing  int // sessions with an owner but no index entry (check) ...
	Stale    int // index entries whose session is gone or has another owner (check)
	Orphans  int // owner-map or ledger entries whose session is gone, re-owned or without TTL (check)
	Fixed    int // index entries added or removed (reindex)
	Duration time.Duration
}

// Fields is the report as name/value pairs, in the order replies and logs show them.
func (r Report) Fields() []any {
	return []any{"rule", r.Rule, "scanned", r.Scanned, "missing", r.Missing, "stale", r.Stale,
		"orphans", r.Orphans, "fixed", r.Fixed, "duration_ms", r.Duration.Milliseconds()}
}

// Drift reports whether a check found anything to repair.
func (r Report) Drift() bool { return r.Missing > 0 || r.Stale > 0 || r.Orphans > 0 }
