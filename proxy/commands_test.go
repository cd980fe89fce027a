package proxy

import (
	"bytes"
	"testing"
)

// TestLookup: every name in the table is found in any letter case; near misses are not.
func TestLookup(t *testing.T) {
	table := newCommandTable(connFamily, statefulFamily, sessionsFamily, scriptingFamily, infoFamily, proxyFamily)
	for name, sp := range table.byName {
		for _, n := range []string{name, string(bytes.ToLower([]byte(name)))} {
			if got := table.lookup([]byte(n)); got != sp {
				t.Fatalf("lookup(%q) = %v, want %v", n, got.name, sp.name)
			}
		}
	}
	for _, n := range []string{"", "GE", "GETT", "G\x00T", "get ", "[ET", "@ET", "{et", "ÿet", "SESSIONS.LISTX",
		"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		if got := table.lookup([]byte(n)); got != table.other {
			t.Fatalf("lookup(%q) = %v, want other", n, got.name)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	table := newCommandTable(connFamily, statefulFamily, sessionsFamily, scriptingFamily, infoFamily, proxyFamily)
	names := [][]byte{[]byte("GET"), []byte("set"), []byte("HSET"), []byte("ZRANGEBYSCORE"), []byte("nosuch")}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		table.lookup(names[i%len(names)])
	}
}
