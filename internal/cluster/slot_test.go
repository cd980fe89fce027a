package cluster

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/sessionproxy/sessionproxy/internal/redistest"
)

// TestSlot: values from the Redis Cluster specification and `CLUSTER KEYSLOT` on Redis 7.0.15.
func TestSlot(t *testing.T) {
	for _, tc := range []struct {
		key  string
		slot int
	}{
		{"", 0},
		{"123456789", 12739}, // the spec's CRC16 check value 0x31C3
		{"foo", 12182},
		{"bar", 5061},
		{"session:10", 6137},
		{"user:100", 9308},
		{"{user1000}.following", 3443},
		{"{user1000}.followers", 3443},
		{"user1000", 3443},
		{"foo{}{bar}", 8363},    // empty first tag: the whole key
		{"foo{{bar}}zap", 4015}, // tag "{bar"
		{"foo{bar}{zap}", 5061}, // first tag only: "bar"
		{"{", 4092},
		{"}{", 12793},
	} {
		if got := Slot([]byte(tc.key)); got != tc.slot {
			t.Errorf("Slot(%q) = %d, want %d", tc.key, got, tc.slot)
		}
	}
}

// TestSlotMatchesRedis: random keys built from bytes that matter ('{', '}', NUL, high bytes),
// compared with CLUSTER KEYSLOT of a real cluster-enabled redis-server.
func TestSlotMatchesRedis(t *testing.T) {
	r := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("{}ab\x00\xff:")
	for range 500 {
		k := make([]byte, rng.IntN(12))
		for i := range k {
			k[i] = alphabet[rng.IntN(len(alphabet))]
		}
		got, err := r.DoText("CLUSTER", "KEYSLOT", string(k))
		if err != nil {
			t.Fatal(err)
		}
		if want, _ := strconv.Atoi(got); Slot(k) != want {
			t.Errorf("Slot(%q) = %d, Redis says %d", k, Slot(k), want)
		}
	}
}

// TestSlotTag: every slot has a tag of at most 4 bytes whose key lands in it, and Redis agrees
// (CLUSTER KEYSLOT of "{tag}session:1" for a spread of slots).
func TestSlotTag(t *testing.T) {
	for s := range Slots {
		tag := SlotTag(s)
		if len(tag) == 0 || len(tag) > 4 || Slot([]byte("{"+tag+"}session:1")) != s {
			t.Fatalf("slot %d: tag %q", s, tag)
		}
	}
	r := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	for s := 0; s < Slots; s += 97 {
		got, err := r.DoText("CLUSTER", "KEYSLOT", "{"+SlotTag(s)+"}session:1")
		if err != nil {
			t.Fatal(err)
		}
		if got != strconv.Itoa(s) {
			t.Errorf("slot %d: Redis puts {%s} in slot %s", s, SlotTag(s), got)
		}
	}
}
