//go:build race

package main

// raceEnabled: the test binary runs under the race detector, so the proxy binary the tests drive
// is built with -race too and any race inside the proxy fails the test that provoked it.
const raceEnabled = true
