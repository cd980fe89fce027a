// A module of its own: the go-redis client tests of cmd/sessionproxy (see goredis_test.go there).
// It is separate so that the main module need not require go-redis; the parent test runs
// `go test` here with the proxies' addresses in GOREDIS_E2E_* variables.
module sessionproxy.test/goredis

go 1.26.0

require github.com/redis/go-redis/v9 v9.23.0

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
