package main

import (
	"os"
	"strings"
	"syscall"
)

// sysmonAwake is the GODEBUG setting that keeps the Go runtime's monitor thread (sysmon) out of
// its deep sleep. The value (ms) is the largest the runtime accepts, so the scheduler trace the
// setting is named for, a SCHED line on stderr, is printed only on a host up for more than 24.8
// days (the runtime counts from boot): once at start, then every 24.8 days.
const sysmonAwake = "schedtrace=2147483647"

// keepSysmonAwake re-executes this binary (same PID, arguments and environment) with
// sysmonAwake added to GODEBUG, unless GODEBUG already sets schedtrace (set schedtrace=0 to keep
// the runtime's default). It returns only if it did not re-execute.
//
// Why: whenever every P is idle, sysmon sleeps until the next system call wakes it with a futex,
// after which it polls every 20 µs until it sees the P idle again. A proxy goes idle between
// requests whenever its clients wait for replies, so at low and moderate load every request paid
// that thread wake-up: on the 2-vCPU bench host the proxy added 80 µs to a GET at -c 1 with the
// default and 40 µs with sysmon kept awake, and throughput at -c 50 rose 5-30% (bench/README.md).
// The runtime has no other switch for this, and GODEBUG is read once, at process start.
func keepSysmonAwake() {
	gd, set := os.LookupEnv("GODEBUG")
	if strings.Contains(gd, "schedtrace=") {
		return
	}
	if set && gd != "" {
		gd += ","
	}
	env := []string{"GODEBUG=" + gd + sysmonAwake}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	// On success Exec does not return; on failure the proxy runs as it is, only slower.
	_ = syscall.Exec("/proc/self/exe", os.Args, env)
}
