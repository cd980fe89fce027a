package cluster

import "sync"

// SlotTag is a short string that hashes to slot: a key "{<tag>}..." lives in that slot, so
// bookkeeping kept per slot (the session index's outbox and owners, issue 13) moves with the
// slot's sessions when a cluster is resharded. Tags use [0-9a-z] only and are at most 4 bytes;
// the table is built once, on first use (some 10^5 CRC16s of 1-4 bytes).
func SlotTag(slot int) string {
	tagsOnce.Do(buildTags)
	return tags[slot]
}

var (
	tagsOnce sync.Once
	tags     [Slots]string
)

const tagAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// buildTags gives every slot the first string, in order of length then alphabet, that hashes
// to it: strings of up to 3 bytes (36^3 = 46656) leave some slots out; 4 bytes cover them all.
func buildTags() {
	left := Slots
	var buf [4]byte
	var try func(n, at int)
	try = func(n, at int) {
		if at == n {
			s := Slot(buf[:n])
			if tags[s] == "" {
				tags[s] = string(buf[:n])
				left--
			}
			return
		}
		for i := 0; i < len(tagAlphabet) && left > 0; i++ {
			buf[at] = tagAlphabet[i]
			try(n, at+1)
		}
	}
	for n := 1; n <= len(buf) && left > 0; n++ {
		try(n, 0)
	}
	if left > 0 {
		panic("cluster: slot tags do not cover every slot") // a property of CRC16, checked by tests
	}
}
