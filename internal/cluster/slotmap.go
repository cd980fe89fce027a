package cluster

import (
	"errors"
	"fmt"
	"slices"
)

// Range is one run of slots and the nodes serving it, as CLUSTER SLOTS lists it.
type Range struct {
	Start, End int    // inclusive
	Primary    string // host:port
	Replicas   []string
}

// Map says which primary serves each slot.
type Map struct {
	owner     [Slots]int16 // index into primaries; -1: no node serves the slot
	primaries []string
}

// NewMap builds the map from CLUSTER SLOTS' ranges. Slots no range names have no owner
// (a cluster that is not ok); ranges that overlap or fall outside 0..16383 are refused.
func NewMap(ranges []Range) (*Map, error) {
	m := &Map{}
	for i := range m.owner {
		m.owner[i] = -1
	}
	for _, r := range ranges {
		if r.Start < 0 || r.End >= Slots || r.Start > r.End || r.Primary == "" {
			return nil, fmt.Errorf("cluster: bad slot range %d-%d at %q", r.Start, r.End, r.Primary)
		}
		idx := slices.Index(m.primaries, r.Primary)
		if idx < 0 {
			idx = len(m.primaries)
			m.primaries = append(m.primaries, r.Primary)
		}
		for s := r.Start; s <= r.End; s++ {
			if m.owner[s] >= 0 {
				return nil, fmt.Errorf("cluster: slot %d served twice", s)
			}
			m.owner[s] = int16(idx)
		}
	}
	if len(m.primaries) == 0 {
		return nil, errors.New("cluster: no slot is served")
	}
	return m, nil
}

// Node is the primary serving slot, "" if none does.
func (m *Map) Node(slot int) string {
	if i := m.owner[slot]; i >= 0 {
		return m.primaries[i]
	}
	return ""
}

// Primaries are the primaries serving at least one slot, in the order first met. The slice is
// the map's own: read it, do not change it (a Map never changes once built).
func (m *Map) Primaries() []string { return m.primaries }

// Covered reports whether every slot has a primary.
func (m *Map) Covered() bool {
	return !slices.Contains(m.owner[:], -1)
}
