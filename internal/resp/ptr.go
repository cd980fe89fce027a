package resp

import "unsafe"

// ptr is the address of b's first byte (len(b) > 0).
func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
