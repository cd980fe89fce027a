package rewrite

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Fingerprint names the index layout the schema keeps: its prefix and every rule, in order. Two
// schemas with the same fingerprint build the same index keys from the same sessions; the
// proxy stores its own at start (FingerprintKey) so that a repair run with other rules can tell
// before it builds a second index next to the first.
func (s *Schema) Fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "%q\n", s.Prefix)
	for _, r := range s.Rules {
		fmt.Fprintf(h, "%q %q %q %q %q %q\n", r.Name, r.Pattern, r.Field, r.JSONPath, r.Layout, r.IndexKey)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// FingerprintKey is where the running proxy keeps its schema's fingerprint (DB 0).
func (s *Schema) FingerprintKey() string { return s.Prefix + "schema" }
