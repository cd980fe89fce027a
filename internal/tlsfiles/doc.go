// Package tlsfiles serves a TLS server configuration from certificate files that may change
// while the process runs: a rotated certificate (a renewal, a new client CA) is picked up by
// polling the files or on demand (SIGHUP), without a restart and without touching connections
// already open. A file that does not load leaves the last good configuration in place.
package tlsfiles
