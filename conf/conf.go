package conf

import (
	"bytes"
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid wraps the error Load returns when the merged configuration fails Validate,
// so callers can tell a bad config from an unreadable file.
var ErrInvalid = errors.New("conf: invalid configuration")

// envPrefix starts every environment variable; the rest is the field's YAML path.
const envPrefix = "SESSIONPROXY_"

// Config is the whole sessionproxy configuration. Field comments give the defaults;
// docs below gives the text printed in DefaultYAML.
type Config struct {
	Listen          string   `yaml:"listen"`           // client listener; default "127.0.0.1:6380"
	Metrics         string   `yaml:"metrics"`          // HTTP listener for /metrics /healthz /readyz; "" disables; default "127.0.0.1:9380"
	Admin           string   `yaml:"admin"`            // HTTP listener for /debug/pprof; "" (default) disables
	ShutdownTimeout Duration `yaml:"shutdown_timeout"` // drain bound on SIGINT/SIGTERM; default 10s
	ConfigWatch     Duration `yaml:"config_watch"`     // how often the config file is checked for changes; default 10s
	LogLevel        string   `yaml:"log_level"`        // debug|info|warn|error; default info
	LogFormat       string   `yaml:"log_format"`       // text|json; default text
	Procs           int      `yaml:"procs"`            // GOMAXPROCS; default 1
	Ordering        string   `yaml:"ordering"`         // auto|arrival|none; default auto
	ClientReads     string   `yaml:"client_reads"`     // epoll|netpoller; default epoll (Linux; netpoller elsewhere)
	Clients         Clients  `yaml:"clients"`
	Upstream        Upstream `yaml:"upstream"`
	Limits          Limits   `yaml:"limits"`
	Index           Index    `yaml:"index"`
	Reaper          Reaper   `yaml:"reaper"`
	SlowLog         SlowLog  `yaml:"slowlog"`
}

// SlowLog is PROXY SLOWLOG's (Redis' slowlog-log-slower-than and slowlog-max-len).
type SlowLog struct {
	SlowerThan Duration `yaml:"slower_than"` // shared-path round trips this slow are kept; 0 off; default 10ms
	MaxLen     int      `yaml:"max_len"`     // entries kept; default 128
}

// Clients says who may use the proxy (README "Client access").
type Clients struct {
	Password      string    `yaml:"password"`            // requirepass for clients; default "" (none)
	ProtectedMode string    `yaml:"protected_mode"`      // auto|yes|no; default auto
	Timeout       Duration  `yaml:"timeout"`             // idle clients are disconnected after it; default 0 (never)
	DenyCommands  []string  `yaml:"deny_commands"`       // NAME or NAME|SUBCOMMAND clients may not run; default none
	Renames       []string  `yaml:"rename_commands"`     // "NAME NEWNAME" (or "NAME": taken away), as rename-command; default none
	OutputLimit   Size      `yaml:"output_buffer_limit"` // replies held for a client that does not read them; default 0 (none)
	InputMemory   Size      `yaml:"input_memory_limit"`  // large incomplete commands held, all clients together; default 2gb
	TLS           ClientTLS `yaml:"tls"`
}

// ClientTLS is a TLS listener for clients, with Redis' tls-* defaults.
type ClientTLS struct {
	Listen      string   `yaml:"listen"`       // host:port; default "" (none)
	CertFile    string   `yaml:"cert_file"`    // PEM certificate chain
	KeyFile     string   `yaml:"key_file"`     // PEM private key
	CAFile      string   `yaml:"ca_file"`      // PEM CAs that sign client certificates
	AuthClients string   `yaml:"auth_clients"` // yes|optional|no; default yes (tls-auth-clients)
	Protocols   string   `yaml:"protocols"`    // default "TLSv1.2 TLSv1.3" (tls-protocols)
	Reload      Duration `yaml:"reload"`       // how often the files are checked for a change; default 10s
}

// Reaper configures the expiry cleanup that runs inside the proxy.
type Reaper struct {
	Interval      Duration `yaml:"interval"`      // ledger sweep period; default 1s
	Batch         int      `yaml:"batch"`         // entries per cleanup step; default 256
	Notifications bool     `yaml:"notifications"` // keyevent subscription (fast path); default true
}

// Index says which keys are sessions and how the user -> sessions index is kept.
type Index struct {
	Prefix string      `yaml:"prefix"` // bookkeeping keys (owner map, deadline ledger); default "sessionproxy:"
	Rules  []IndexRule `yaml:"rules"`  // first matching rule owns a key; default: the seed layout
	// Cluster keeps the index on a Redis Cluster (upstream.mode cluster); off, session writes
	// pass unindexed there. Experimental: README "Guarantees on Redis Cluster".
	Cluster bool `yaml:"cluster"`
}

// IndexRule is one kind of session key. The rewrite package checks it in full.
type IndexRule struct {
	Name     string `yaml:"name"`
	Pattern  string `yaml:"pattern"`   // glob with one '*': the session id
	Field    string `yaml:"field"`     // owner in this hash field, or
	JSONPath string `yaml:"json_path"` // owner at this dotted path of a JSON string value
	Layout   string `yaml:"layout"`    // set | zset | global-zset
	IndexKey string `yaml:"index_key"` // with {uid} for set/zset; one key for global-zset
}

// Upstream is the Redis server the proxy forwards to.
type Upstream struct {
	Mode        string   `yaml:"mode"`  // standalone | sentinel | cluster; default standalone
	Addr        string   `yaml:"addr"`  // host:port; default "127.0.0.1:6379" (standalone)
	Addrs       []string `yaml:"addrs"` // sentinel: the sentinels; cluster: seed nodes
	Sentinel    Sentinel `yaml:"sentinel"`
	Username    string   `yaml:"username"`     // ACL user the proxy's own and unauthenticated clients' connections use; "" = default user
	Password    string   `yaml:"password"`     // "" = no AUTH
	DialTimeout Duration `yaml:"dial_timeout"` // default 2s
	ReadTimeout Duration `yaml:"read_timeout"` // bound on the proxy's own round trips (health check, AUTH check, connection setup); default 5s
	// CommandTimeout bounds the wait for Redis' replies to clients' commands on shared
	// connections, and writes to Redis; default 30s, 0 none.
	CommandTimeout Duration `yaml:"command_timeout"`
	PoolSize       int      `yaml:"pool_size"` // shared upstream connections per (db, user); default 2
	TLS            TLS      `yaml:"tls"`
}

// Sentinel says which master the sentinels of upstream.addrs watch for the proxy.
type Sentinel struct {
	Master   string `yaml:"master"`   // monitored master name; default "mymaster"
	Username string `yaml:"username"` // AUTH for the sentinels themselves; "" = default user
	Password string `yaml:"password"` // "" = no AUTH
}

// TLS configures TLS to the upstream. File paths are used as given, so relative
// paths are relative to the working directory, not to the config file.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Limits bound what one client may send and how many may connect.
type Limits struct {
	MaxClients      int  `yaml:"max_clients"`       // default 10000
	MaxDedicated    int  `yaml:"max_dedicated"`     // clients on upstream connections of their own; default 1000
	MaxBulkLen      Size `yaml:"max_bulk_len"`      // default 512MiB, like Redis proto-max-bulk-len
	MaxMultibulkLen int  `yaml:"max_multibulk_len"` // default 2147483647 (Redis 7 accepts up to INT_MAX)
	MaxInlineLen    Size `yaml:"max_inline_len"`    // default 64KiB (Redis PROTO_INLINE_MAX_SIZE)
}

// ruleDefaults fills in what a rule in the file left out, as the commented default promises:
// the owner in the hash field "userid" (unless json_path is set), layout set, index key
// user:{uid} (not for global-zset, whose one key has no sensible default).
func (x *Index) ruleDefaults() {
	def := Default().Index.Rules[0]
	for i := range x.Rules {
		r := &x.Rules[i]
		if r.Field == "" && r.JSONPath == "" {
			r.Field = def.Field
		}
		if r.Layout == "" {
			r.Layout = def.Layout
		}
		if r.IndexKey == "" && r.Layout != "global-zset" {
			r.IndexKey = def.IndexKey
		}
	}
}

// Default returns the complete default configuration; it passes Validate.
func Default() Config {
	return Config{
		Listen:          "127.0.0.1:6380",
		Metrics:         "127.0.0.1:9380",
		ShutdownTimeout: Duration(10 * time.Second),
		ConfigWatch:     Duration(10 * time.Second),
		LogLevel:        "info",
		LogFormat:       "text",
		Procs:           1,
		Ordering:        "auto",
		ClientReads:     "epoll",
		Clients: Clients{ProtectedMode: "auto", DenyCommands: []string{}, Renames: []string{}, InputMemory: 2 << 30, TLS: ClientTLS{AuthClients: "yes",
			Protocols: "TLSv1.2 TLSv1.3", Reload: Duration(10 * time.Second)}},
		Upstream: Upstream{
			Mode:           "standalone",
			Addr:           "127.0.0.1:6379",
			Addrs:          []string{},
			Sentinel:       Sentinel{Master: "mymaster"},
			DialTimeout:    Duration(2 * time.Second),
			ReadTimeout:    Duration(5 * time.Second),
			CommandTimeout: Duration(30 * time.Second),
			PoolSize:       2,
		},
		Reaper:  Reaper{Interval: Duration(time.Second), Batch: 256, Notifications: true},
		SlowLog: SlowLog{SlowerThan: Duration(10 * time.Millisecond), MaxLen: 128},
		Index: Index{
			Prefix: "sessionproxy:",
			Rules: []IndexRule{{Name: "session", Pattern: "session:*", Field: "userid",
				Layout: "set", IndexKey: "user:{uid}"}},
		},
		Limits: Limits{
			MaxClients:      10000,
			MaxDedicated:    1000,
			MaxBulkLen:      512 * MiB,
			MaxMultibulkLen: math.MaxInt32,
			MaxInlineLen:    64 * KiB,
		},
	}
}

// Flags are the command-line overrides; nil means "not given", so that a flag given empty
// (-metrics "") overrides like an empty environment variable does.
type Flags struct{ Listen, Upstream, Metrics *string }

// Load builds the config: Default(), then the YAML file at path (skipped when path == ""), then the
// environment through lookupEnv, then flags; and returns Validate()'s error (wrapped) if any.
// lookupEnv is injected (normally os.LookupEnv) so tests need not touch the process environment.
func Load(path string, lookupEnv func(string) (string, bool), f Flags) (Config, error) {
	c := Default()
	if path != "" {
		if err := c.loadFile(path); err != nil {
			return Config{}, err
		}
	}
	if lookupEnv != nil {
		if err := c.loadEnv(lookupEnv); err != nil {
			return Config{}, err
		}
	}
	f.apply(&c)
	c.Index.ruleDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w:\n%w", ErrInvalid, err)
	}
	return c, nil
}

// loadFile overlays the YAML file at path; keys it does not mention keep their values.
func (c *Config) loadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("conf: %w", err) // the os error already names the path
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt key must fail, not silently keep the default
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("conf: %s: %w", path, err)
	}
	// The decoder reads one document; a second one would be ignored without this check.
	switch err := dec.Decode(new(yaml.Node)); {
	case err == nil:
		return fmt.Errorf("conf: %s: more than one YAML document", path)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("conf: %s: %w", path, err)
	}
	return nil
}

// loadEnv overlays SESSIONPROXY_<PATH> for every leaf field. A variable that is set but
// empty still counts, so SESSIONPROXY_METRICS= disables metrics. Every bad variable is reported.
func (c *Config) loadEnv(lookupEnv func(string) (string, bool)) error {
	var errs []error
	walkLeaves(reflect.ValueOf(c).Elem(), "", func(path string, v reflect.Value) {
		name := envName(path)
		if s, ok := lookupEnv(name); ok {
			if err := setString(v, s); err != nil {
				errs = append(errs, fmt.Errorf("conf: %s: %w", name, err))
			}
		}
	})
	return errors.Join(errs...)
}

func (f Flags) apply(c *Config) {
	if f.Listen != nil {
		c.Listen = *f.Listen
	}
	if f.Upstream != nil {
		c.Upstream.Addr = *f.Upstream
	}
	if f.Metrics != nil {
		c.Metrics = *f.Metrics
	}
}

// envName maps a YAML path such as "upstream.tls.ca_file" to SESSIONPROXY_UPSTREAM_TLS_CA_FILE.
func envName(path string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// walkLeaves calls fn with the YAML path of every leaf field under the struct v, so that env
// support follows the struct instead of a hand-kept list. Slices and maps are skipped: one
// variable cannot sensibly hold a list of structs.
func walkLeaves(v reflect.Value, prefix string, fn func(path string, v reflect.Value)) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name) // yaml.v3's own default
		}
		switch fv := v.Field(i); fv.Kind() {
		case reflect.Struct:
			walkLeaves(fv, prefix+name+".", fn)
		case reflect.Slice:
			if fv.Type().Elem().Kind() == reflect.String { // a list of strings: comma-separated
				fn(prefix+name, fv)
			}
		case reflect.Map:
		default:
			fn(prefix+name, fv)
		}
	}
}

// setString parses s into the leaf v with the same syntax the YAML file uses.
func setString(v reflect.Value, s string) error {
	switch p := v.Addr().Interface().(type) {
	case *Duration:
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		*p = d
	case *Size:
		n, err := ParseSize(s)
		if err != nil {
			return err
		}
		*p = n
	default:
		switch v.Kind() {
		case reflect.String:
			v.SetString(s)
		case reflect.Slice: // []string, comma-separated; "" is the empty list
			list := []string{}
			for f := range strings.SplitSeq(s, ",") {
				if f = strings.TrimSpace(f); f != "" {
					list = append(list, f)
				}
			}
			v.Set(reflect.ValueOf(list))
		case reflect.Bool:
			b, err := strconv.ParseBool(s)
			if err != nil {
				return fmt.Errorf("invalid boolean %q, want true or false", s)
			}
			v.SetBool(b)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			n, err := strconv.ParseInt(s, 10, v.Type().Bits())
			if err != nil {
				return fmt.Errorf("invalid integer %q", s)
			}
			v.SetInt(n)
		default:
			return fmt.Errorf("type %s cannot be set from the environment", v.Type())
		}
	}
	return nil
}

// Duration is a time.Duration that reads and writes as "2s", "150ms" in YAML and env.
// A bare number is rejected: "2" could mean seconds or nanoseconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalYAML writes d as a string such as "10s".
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a duration string such as "150ms" or "1m30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := decodeScalar(n, parseDuration)
	if err == nil {
		*d = v
	}
	return err
}

func parseDuration(s string) (Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q, want a number with a unit such as 150ms, 2s or 1m", s)
	}
	return Duration(d), nil
}

// Size is a byte count that reads "512MiB", "64KiB", "1GB", "1048576" and prints in the largest exact binary unit.
type Size int64

// Binary size units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
	PiB
	EiB
)

type sizeUnit struct {
	name string
	n    Size
}

// sizeUnits is ordered largest first so String finds the largest exact unit. Units are
// case-sensitive on purpose: redis.conf reads "1mb" as 1MiB and "1m" as 1MB, so a lower-case
// unit copied from there is refused rather than guessed.
var sizeUnits = []sizeUnit{
	{"EiB", EiB}, {"PiB", PiB}, {"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"EB", 1e18}, {"PB", 1e15}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// ParseSize reads a non-negative integer with an optional unit: B, KiB, MiB, GiB, TiB, PiB,
// EiB (powers of 1024) or KB, MB, GB, TB, PB, EB (powers of 1000). No unit means bytes.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && '0' <= s[i] && s[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q, want a whole number of bytes such as 1048576, 64KiB or 512MiB", s)
	}
	unit := strings.TrimSpace(s[i:])
	mult := Size(1)
	if strings.HasPrefix(unit, ".") {
		return 0, fmt.Errorf("invalid size %q: no fractions, use a smaller unit", s)
	}
	if unit != "" {
		j := slices.IndexFunc(sizeUnits, func(u sizeUnit) bool { return u.name == unit })
		if j < 0 {
			return 0, fmt.Errorf("invalid size %q: unknown unit %q, want B, KiB, MiB, GiB or KB, MB, GB", s, unit)
		}
		mult = sizeUnits[j].n
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(n) * mult, nil
}

func (s Size) String() string {
	for _, u := range sizeUnits[:6] { // the binary units
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalYAML writes s as a string such as "512MiB".
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML reads a size such as "64KiB" or 1048576.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := decodeScalar(n, ParseSize)
	if err == nil {
		*s = v
	}
	return err
}

// decodeScalar parses a scalar node. Failures are returned as a *yaml.TypeError, which makes
// the decoder note the error with its line and carry on, so one run reports every bad value.
func decodeScalar[T any](n *yaml.Node, parse func(string) (T, error)) (T, error) {
	var v T
	err := errors.New("want a single value, not a list or mapping")
	if n.Kind == yaml.ScalarNode {
		v, err = parse(n.Value)
	}
	if err != nil {
		return v, &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	return v, nil
}

// Validate checks every field, names each bad one by its YAML path, and joins all the errors
// so one run shows everything to fix. It stats the TLS files named, its only I/O.
func (c Config) Validate() error {
	var errs []error
	check := func(path string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}

	if c.Listen != "" || c.Clients.TLS.Listen == "" {
		check("listen", hostPort(c.Listen, false))
	}
	c.Clients.TLS.validate(check)
	check("clients.timeout", notNegative(c.Clients.Timeout))
	if c.Metrics != "" {
		check("metrics", hostPort(c.Metrics, false))
	}
	if c.Admin != "" {
		check("admin", hostPort(c.Admin, false))
	}
	check("shutdown_timeout", positive(c.ShutdownTimeout))
	check("log_level", oneOf(c.LogLevel, "debug", "info", "warn", "error"))
	check("log_format", oneOf(c.LogFormat, "text", "json"))
	check("procs", between(c.Procs, 1, 1024))
	check("slowlog.max_len", between(c.SlowLog.MaxLen, 1, 100000))
	check("ordering", oneOf(c.Ordering, "auto", "arrival", "none"))
	check("client_reads", oneOf(c.ClientReads, "netpoller", "epoll"))
	check("clients.protected_mode", oneOf(c.Clients.ProtectedMode, "auto", "yes", "no"))
	check("reaper.interval", positive(c.Reaper.Interval))
	check("reaper.batch", between(c.Reaper.Batch, 1, 10000))
	if c.Index.Prefix == "" {
		check("index.prefix", errors.New("must not be empty"))
	}
	if len(c.Index.Rules) == 0 {
		check("index.rules", errors.New("must have at least one rule"))
	}
	for i, r := range c.Index.Rules {
		at := fmt.Sprintf("index.rules[%d].", i)
		if r.Name == "" {
			check(at+"name", errors.New("must not be empty"))
		}
		if strings.Count(r.Pattern, "*") != 1 {
			check(at+"pattern", fmt.Errorf("must contain exactly one '*', got %q", r.Pattern))
		}
		if (r.Field == "") == (r.JSONPath == "") {
			check(at+"field", errors.New("set exactly one of field and json_path"))
		}
		check(at+"layout", oneOf(r.Layout, "set", "zset", "global-zset"))
		if r.IndexKey == "" {
			check(at+"index_key", errors.New("must not be empty"))
		}
	}

	u := c.Upstream
	check("upstream.mode", oneOf(u.Mode, "standalone", "sentinel", "cluster"))
	switch u.Mode {
	case "standalone":
		check("upstream.addr", hostPort(u.Addr, true))
	case "sentinel", "cluster":
		if len(u.Addrs) == 0 {
			check("upstream.addrs", fmt.Errorf("must list at least one host:port in %s mode", u.Mode))
		}
		for i, a := range u.Addrs {
			check(fmt.Sprintf("upstream.addrs[%d]", i), hostPort(a, true))
		}
	}
	if u.Mode == "sentinel" && u.Sentinel.Master == "" {
		check("upstream.sentinel.master", errors.New("must name the master the sentinels monitor"))
	}
	if u.Mode == "sentinel" && u.TLS.Enabled && u.TLS.ServerName == "" && !u.TLS.InsecureSkipVerify {
		// The master's address changes; the certificate name to verify must not.
		check("upstream.tls.server_name", errors.New("required with TLS in sentinel mode: the name every node's certificate carries"))
	}
	check("upstream.dial_timeout", positive(u.DialTimeout))
	check("upstream.read_timeout", positive(u.ReadTimeout))
	check("upstream.command_timeout", notNegative(u.CommandTimeout))
	check("upstream.pool_size", between(u.PoolSize, 1, 64))

	// Files are checked even with TLS disabled: a named file that is missing is a mistake either way.
	t := u.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		check("upstream.tls.key_file", errors.New("required when upstream.tls.cert_file is set"))
	case t.CertFile == "" && t.KeyFile != "":
		check("upstream.tls.cert_file", errors.New("required when upstream.tls.key_file is set"))
	}
	check("upstream.tls.ca_file", fileExists(t.CAFile))
	check("upstream.tls.cert_file", fileExists(t.CertFile))
	check("upstream.tls.key_file", fileExists(t.KeyFile))

	l := c.Limits
	check("limits.max_clients", between(l.MaxClients, 1, math.MaxInt))
	check("limits.max_dedicated", between(l.MaxDedicated, 0, math.MaxInt))
	check("limits.max_bulk_len", between(l.MaxBulkLen, 1, 4*GiB))
	check("limits.max_multibulk_len", between(l.MaxMultibulkLen, 1, math.MaxInt32))
	check("limits.max_inline_len", between(l.MaxInlineLen, KiB, math.MaxInt64))
	return errors.Join(errs...)
}

// hostPort checks a numeric host:port. Listeners may omit the host (all interfaces) and use
// port 0 (a free port, as tests do); an upstream needs both.
func hostPort(addr string, upstream bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, got %q", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	switch {
	case err != nil:
		return fmt.Errorf("port must be a number from 0 to 65535, got %q", addr)
	case upstream && host == "":
		return fmt.Errorf("host missing in %q", addr)
	case upstream && p == 0:
		return fmt.Errorf("port must be from 1 to 65535, got %q", addr)
	}
	return nil
}

func notNegative(d Duration) error {
	if d < 0 {
		return fmt.Errorf("must be >= 0, got %v", d)
	}
	return nil
}

func positive(d Duration) error {
	if d <= 0 {
		return fmt.Errorf("must be > 0, got %v", d)
	}
	return nil
}

// between reports v outside [lo, hi] as the bound it breaks, e.g. "must be >= 1, got 0".
func between[T cmp.Ordered](v, lo, hi T) error {
	switch {
	case v < lo:
		return fmt.Errorf("must be >= %v, got %v", lo, v)
	case v > hi:
		return fmt.Errorf("must be <= %v, got %v", hi, v)
	}
	return nil
}

func oneOf(v string, set ...string) error {
	if !slices.Contains(set, v) {
		return fmt.Errorf("must be one of %s, got %q", strings.Join(set, ", "), v)
	}
	return nil
}

// validate checks the client TLS listener's settings when there is one.
func (t ClientTLS) validate(check func(string, error)) {
	if t.Listen == "" {
		return
	}
	check("clients.tls.listen", hostPort(t.Listen, false))
	for path, file := range map[string]string{"cert_file": t.CertFile, "key_file": t.KeyFile} {
		if file == "" {
			check("clients.tls."+path, errors.New("required with clients.tls.listen"))
		}
	}
	check("clients.tls.auth_clients", oneOf(t.AuthClients, "yes", "optional", "no"))
	if t.AuthClients != "no" && t.CAFile == "" {
		check("clients.tls.ca_file", errors.New("required unless clients.tls.auth_clients is no (the CAs that sign client certificates)"))
	}
	_, _, err := TLSVersions(t.Protocols)
	check("clients.tls.protocols", err)
	check("clients.tls.reload", positive(t.Reload))
	check("clients.tls.ca_file", fileExists(t.CAFile))
	check("clients.tls.cert_file", fileExists(t.CertFile))
	check("clients.tls.key_file", fileExists(t.KeyFile))
}

// TLSVersions parses a Redis tls-protocols value ("TLSv1.2 TLSv1.3") into the lowest and
// highest version it names.
func TLSVersions(protocols string) (lo, hi uint16, err error) {
	for _, p := range strings.Fields(protocols) {
		var v uint16
		switch strings.ToLower(p) {
		case "tlsv1.2":
			v = tls.VersionTLS12
		case "tlsv1.3":
			v = tls.VersionTLS13
		default:
			return 0, 0, fmt.Errorf("want TLSv1.2 and/or TLSv1.3, got %q", p)
		}
		if lo == 0 || v < lo {
			lo = v
		}
		hi = max(hi, v)
	}
	if lo == 0 {
		return 0, 0, errors.New("must name TLSv1.2 and/or TLSv1.3")
	}
	return lo, hi, nil
}

// fileExists accepts "" (not configured) or the path of a file that exists.
func fileExists(path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", path)
	}
	return nil
}

// docs is the comment DefaultYAML writes above each field, keyed by YAML path.
// DefaultYAML panics on a field without one, so a new field cannot ship undocumented.
var docs = map[string]string{
	"listen":                            "Client listener, host:port; port 0 picks a free port.",
	"metrics":                           `HTTP listener for /metrics, /healthz and /readyz, host:port; "" disables it.`,
	"admin":                             `HTTP listener for /debug/pprof (CPU, heap, goroutine profiles), host:port; "" (the default) disables it. Profiles show memory contents and command arguments: bind it to loopback or a private address only.`,
	"config_watch":                      "How often the config file (-config) is checked for changes: a changed file is reloaded as on SIGHUP (a Kubernetes ConfigMap volume updates it in place, deploy/k8s); one that does not load, or changes a setting that needs a restart, is logged and changes nothing. 0: only SIGHUP and PROXY RELOAD reload.",
	"shutdown_timeout":                  "On SIGINT/SIGTERM, how long in-flight requests may drain before connections close.",
	"log_level":                         "debug, info, warn or error.",
	"log_format":                        "text or json.",
	"clients":                           "Who may use the proxy.",
	"clients.password":                  "If set, clients must AUTH with it (as with Redis' requirepass: AUTH <pw>, AUTH default <pw>, HELLO <n> AUTH default <pw>) and then run as the proxy's upstream user. Unset: a client runs as Redis' default user until it AUTHs, and Redis checks its AUTH; the proxy's upstream credentials are never lent to clients.",
	"upstream.command_timeout":          "How long clients' commands on shared upstream connections may wait for Redis' replies (and a write to Redis may take): past it the connection is closed and every command waiting on it gets -ERR upstream connection lost: no progress within ..., in order. Clients on connections of their own (blocking commands, subscribers) have only the write bound. 0: none. Keep it above your slowest command (a long script, KEYS on a big database).",
	"clients.rename_commands":           "Redis' rename-command for clients, one entry per command: \"CONFIG b840fc02d5\" runs CONFIG when a client sends B840FC02D5 and takes CONFIG away under its own name (answered as unknown, naming this setting); \"DEBUG\" alone takes DEBUG away. Unlike rename-command, scripts still reach the command (see deny_commands).",
	"clients.input_memory_limit":        "The bytes that large incomplete commands (64 KiB and more, e.g. a big SET value still coming in) may hold in the proxy for all clients together, like Redis' maxmemory-clients for what clients send: the client whose command takes the total past it is disconnected (sessionproxy_client_disconnected_total{reason=\"input_memory\"}; sessionproxy_client_input_held_bytes is the total). With it, the proxy's memory for client input stays near this bound however many clients trickle huge commands. 0: no bound.",
	"clients.output_buffer_limit":       "As the hard limit of Redis' client-output-buffer-limit for normal clients: a client whose unread replies the proxy holds beyond it is disconnected (sessionproxy_client_disconnected_total{reason=\"output_buffer\"}). 0 (Redis' default): no bound; the proxy then holds at most the replies to the commands of one read of the client's (it reads no more until they are written). Subscribers are bounded by Redis' own pubsub limit on their connections.",
	"clients.deny_commands":             "Commands (FLUSHALL) or subcommands (CONFIG|SET) clients may not run through the proxy, as with Redis' rename-command NAME \"\": Redis answers them -ERR unknown command 'NAME (denied by the proxy: clients.deny_commands)', in order, and discards a transaction that holds one. REPLICAOF and SLAVEOF go together; scripts are not covered (deny EVAL, EVALSHA, FCALL, FUNCTION... too: README). Unknown names stop the proxy at start. Environment: comma-separated.",
	"clients.timeout":                   "As Redis' timeout: a client idle this long is disconnected (checked every second); 0 never. Clients blocked in a command, subscribers and replication streams are exempt.",
	"clients.tls":                       "A TLS listener for clients, beside listen (set listen to \"\" to serve TLS only). Plain connections to it fail their handshake and are closed. The files are checked every reload interval and on a config reload (SIGHUP, PROXY RELOAD); a renewed certificate (or CA) is used for new connections, open ones keep theirs, and files that do not load leave the last good ones in use.",
	"clients.tls.listen":                "TLS client listener, host:port; \"\" (the default) disables it.",
	"clients.tls.cert_file":             "PEM certificate chain the proxy presents.",
	"clients.tls.key_file":              "PEM private key of cert_file.",
	"clients.tls.ca_file":               "PEM CAs that sign the client certificates accepted (required unless auth_clients is no).",
	"clients.tls.auth_clients":          "As Redis' tls-auth-clients: yes (a client certificate signed by ca_file is required), optional (checked if sent), no.",
	"clients.tls.protocols":             "As Redis' tls-protocols: TLSv1.2 and/or TLSv1.3. Cipher suites are Go's defaults (forward-secret ECDHE suites for TLS 1.2, all of TLS 1.3).",
	"clients.tls.reload":                "How often the certificate files are checked for a change.",
	"clients.protected_mode":            "yes: only 127.0.0.1 and ::1 may connect (others get -DENIED); no: anyone who can reach the listener; auto: yes while nothing asks clients for a password (no clients.password, and Redis answers an unauthenticated PING).",
	"index":                             "The user -> sessions index: which keys are sessions, where their owner is, how the index is laid out.",
	"index.prefix":                      "Prefix of the proxy's bookkeeping keys in each DB (owner map, deadline ledger).",
	"index.cluster":                     "Cluster mode only: keep the session index across the cluster's slots (experimental, see README \"Guarantees on Redis Cluster\"); false: session writes pass unindexed there and SESSIONS.* are refused.",
	"index.rules":                       "Session key rules; the first whose pattern matches a key owns it. Not settable from the environment.",
	"index.rules[].name":                "Rule name, for SESSIONS.* [rule].",
	"index.rules[].pattern":             "Session keys: a glob with exactly one '*', which matches the session id.",
	"index.rules[].field":               "Owner's user id is this hash field (leave json_path empty).",
	"index.rules[].json_path":           "Or: owner's user id is at this dotted path of a JSON string value, e.g. passport.user (leave field empty).",
	"index.rules[].layout":              "set (a set of session ids per user), zset (per user, scored by expiry deadline in ms) or global-zset (one sorted set of session keys scored by numeric user id).",
	"index.rules[].index_key":           "Index key: a template with {uid} for set and zset, one plain key for global-zset.",
	"reaper":                            "Expiry cleanup inside the proxy: keyspace events for speed, a sweep of the deadline ledger for completeness.",
	"slowlog":                           "PROXY SLOWLOG: slow round trips of clients' commands to Redis on shared connections (PROXY SLOWLOG GET [count], LEN, RESET, as Redis' SLOWLOG).",
	"slowlog.slower_than":               "PROXY SLOWLOG keeps the clients' commands whose round trip to Redis on a shared connection took this long or longer (from being queued to the last reply, so waiting behind other clients' commands counts too), as Redis' slowlog-log-slower-than; 0: off.",
	"slowlog.max_len":                   "How many entries PROXY SLOWLOG keeps (the oldest go first), as Redis' slowlog-max-len.",
	"reaper.interval":                   "How often the deadline ledger is swept.",
	"reaper.batch":                      "Ledger entries cleaned per atomic step (bounds how long Redis is busy with one step).",
	"reaper.notifications":              "Subscribe to expired/evicted keyevents, enabling them with CONFIG SET if needed; false runs on the sweep alone.",
	"client_reads":                      "How the proxy learns that a plain client connection has bytes to read. epoll: an epoll loop of the proxy's own (Linux; elsewhere the proxy uses netpoller), one read per batch, and when thousands of clients hang up at once it serves a few of them a turn, so that the clients still there are not held up (their PING p99 2.5-11 ms in the runs of bench/README.md, where netpoller let it reach 100-190 ms); netpoller: Go's, where each client batch costs a read that finds nothing before the goroutine waits, and connection-per-request traffic runs 2-8% faster. TLS clients always use netpoller.",
	"ordering":                          "Whether commands of different clients reach Redis in the order their bytes reached the proxy, also when they come in microseconds apart. arrival: always (about 60% more CPU per request under load, see README); auto: while the proxy handles at most 2,000 batches a second (where the CPU is spare), not under load; none: each client's own order only, as most proxies keep it.",
	"procs":                             "CPU cores the proxy's Go code may use at once (GOMAXPROCS). One is fastest when the proxy shares a small host with Redis and its clients (measured, see bench/README.md); raise it on a dedicated host with many clients.",
	"upstream":                          "The Redis server to forward to.",
	"upstream.mode":                     "standalone (one Redis at upstream.addr), sentinel (the master the sentinels at upstream.addrs report for upstream.sentinel.master, followed across failovers) or cluster (routing by slot across the primaries of a Redis Cluster; the session index there needs index.cluster, see README).",
	"upstream.addr":                     "Redis server, host:port (standalone mode).",
	"upstream.addrs":                    "Sentinel mode: the sentinels, host:port each; cluster mode: seed nodes. From the environment: comma-separated.",
	"upstream.sentinel":                 "Sentinel mode: which master to follow, and the sentinels' own AUTH.",
	"upstream.sentinel.master":          "Name of the master the sentinels monitor.",
	"upstream.sentinel.username":        `ACL user for the sentinels; "" is the default user.`,
	"upstream.sentinel.password":        `Password for the sentinels; "" sends no AUTH.`,
	"upstream.username":                 `ACL user (on every data node) for the proxy's own connections and clients that have not sent AUTH; "" is the default user.`,
	"upstream.password":                 `Password for upstream.username; "" sends no AUTH.`,
	"upstream.dial_timeout":             "Bound on connecting to the upstream.",
	"upstream.read_timeout":             "Bound on the proxy's own round trips: health check, AUTH check, connection setup.",
	"upstream.pool_size":                "Shared upstream connections per (db, user), 1 to 64.",
	"upstream.tls":                      "TLS to the upstream. Relative file paths are relative to the working directory.",
	"upstream.tls.enabled":              "Connect to the upstream over TLS.",
	"upstream.tls.ca_file":              `PEM CA certificates to verify the server with; "" uses the system roots.`,
	"upstream.tls.cert_file":            "PEM client certificate for mutual TLS; set together with key_file.",
	"upstream.tls.key_file":             "PEM private key of cert_file.",
	"upstream.tls.server_name":          `Name the server certificate must match; "" uses the host of upstream.addr.`,
	"upstream.tls.insecure_skip_verify": "Do not verify the server certificate. For testing only.",
	"limits":                            "Limits on clients. Sizes take B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000).",
	"limits.max_clients":                "Most client connections at once.",
	"limits.max_dedicated":              "Most clients on upstream connections of their own at once (MULTI, WATCH, SUBSCRIBE, blocking commands...): each counts against Redis' maxclients. Beyond it the command gets an error and the client stays. 0: no bound.",
	"limits.max_bulk_len":               "Largest bulk string a client may send, up to 4GiB (Redis proto-max-bulk-len).",
	"limits.max_multibulk_len":          "Most arguments in one command, up to 2147483647.",
	"limits.max_inline_len":             "Longest inline command, at least 1KiB (Redis PROTO_INLINE_MAX_SIZE).",
}

const defaultHeader = `# sessionproxy configuration. Every value below is the default, so keep only what you change.
# Each field can also be set with SESSIONPROXY_ and its upper-cased path, e.g.
# SESSIONPROXY_UPSTREAM_ADDR or SESSIONPROXY_LIMITS_MAX_BULK_LEN; the environment overrides
# this file and command-line flags override both.

`

// DefaultYAML returns the complete default config as commented YAML; it is what
// -print-default-config prints and what sessionproxy.example.yaml holds.
func DefaultYAML() []byte {
	var root yaml.Node
	if err := root.Encode(Default()); err != nil {
		panic(err) // Default() is static; failing to encode it is a bug
	}
	addDocs(&root, "")
	var b bytes.Buffer
	b.WriteString(defaultHeader)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&root); err != nil {
		panic(err)
	}
	if err := enc.Close(); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// addDocs sets the comment above each key of the mapping n from docs, adding the default
// for scalar values.
func addDocs(n *yaml.Node, prefix string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := prefix + k.Value
		doc, ok := docs[path]
		if !ok {
			panic("conf: no doc for " + path)
		}
		switch v.Kind {
		case yaml.MappingNode:
			addDocs(v, path+".")
			if prefix == "" {
				doc = "\n" + doc // a blank line before each top-level section
			}
		case yaml.SequenceNode:
			for _, e := range v.Content {
				if e.Kind == yaml.MappingNode {
					addDocs(e, path+"[].")
				}
			}
		case yaml.ScalarNode:
			def := v.Value
			if def == "" {
				def = `""`
			}
			doc += " Default: " + def
		}
		k.HeadComment = doc
	}
}

// Changed lists the YAML paths of the settings that differ between a and b (index.rules as
// one), in the struct's order: what a reload of the config file would change.
func Changed(a, b Config) []string {
	var out []string
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	leaves := map[string]reflect.Value{}
	walkLeaves(vb, "", func(path string, v reflect.Value) { leaves[path] = v })
	walkLeaves(va, "", func(path string, v reflect.Value) {
		if !reflect.DeepEqual(v.Interface(), leaves[path].Interface()) {
			out = append(out, path)
		}
	})
	if !reflect.DeepEqual(a.Index.Rules, b.Index.Rules) {
		out = append(out, "index.rules")
	}
	return out
}

// Reloadable are the settings a running proxy takes from a reloaded config file (SIGHUP,
// PROXY RELOAD); a change to any other needs a restart. (The client TLS files are read again
// on a reload too.)
var Reloadable = map[string]bool{
	"log_level": true, "clients.timeout": true, "clients.output_buffer_limit": true, "clients.input_memory_limit": true,
	"clients.deny_commands": true, "clients.rename_commands": true, "clients.password": true,
	"upstream.command_timeout": true, "limits.max_clients": true, "limits.max_dedicated": true,
}

// Setting is one configuration value by its YAML path, as text.
type Setting struct{ Path, Value string }

// Settings lists every setting of c (index.rules as one line per rule), secrets shown only as
// set or not: what PROXY CONFIG GET answers.
func Settings(c Config) []Setting {
	var out []Setting
	walkLeaves(reflect.ValueOf(&c).Elem(), "", func(path string, v reflect.Value) {
		val := fmt.Sprint(v.Interface())
		if v.Kind() == reflect.Slice {
			parts := make([]string, v.Len())
			for i := range parts {
				parts[i] = fmt.Sprint(v.Index(i).Interface())
			}
			val = strings.Join(parts, ",")
		}
		if strings.HasSuffix(path, "password") && val != "" {
			val = "(set)"
		}
		out = append(out, Setting{path, val})
	})
	for i, r := range c.Index.Rules {
		out = append(out, Setting{fmt.Sprintf("index.rules[%d]", i),
			fmt.Sprintf("name=%s pattern=%s field=%s json_path=%s layout=%s index_key=%s", r.Name, r.Pattern, r.Field, r.JSONPath, r.Layout, r.IndexKey)})
	}
	return out
}
