package conf

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/build"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite sessionproxy.example.yaml from DefaultYAML")

// fullConfig is what testdata/good/full.yaml holds: every field differs from Default().
func fullConfig() Config {
	return Config{
		Listen:          "0.0.0.0:7000",
		Metrics:         "",
		Admin:           "127.0.0.1:9381",
		ShutdownTimeout: Duration(90 * time.Second), ConfigWatch: Default().ConfigWatch,
		LogLevel:  "debug",
		LogFormat: "json",
		Procs:     4,
		Ordering:  "arrival", ClientReads: "epoll",
		Upstream: Upstream{
			Mode:        "sentinel",
			Addr:        "redis.internal:6390",
			Addrs:       []string{"10.0.0.1:26379", "10.0.0.2:26379"},
			Sentinel:    Sentinel{Master: "sessions", Username: "watcher", Password: "s3ntinel"},
			Username:    "proxy",
			Password:    "s3cret",
			DialTimeout: Duration(150 * time.Millisecond),
			ReadTimeout: Duration(3 * time.Second),
			PoolSize:    8,
			// not in the file: the defaults
			CommandTimeout: Duration(30 * time.Second),
			TLS: TLS{
				Enabled:            true,
				CAFile:             "testdata/tls/ca.pem",
				CertFile:           "testdata/tls/client.pem",
				KeyFile:            "testdata/tls/client-key.pem",
				ServerName:         "redis.example.com",
				InsecureSkipVerify: true,
			},
		},
		Clients: Clients{ProtectedMode: "auto", DenyCommands: []string{}, Renames: []string{}, InputMemory: Default().Clients.InputMemory, TLS: Default().Clients.TLS},
		Limits:  Limits{MaxClients: 500, MaxDedicated: 1000, MaxBulkLen: 1e9, MaxMultibulkLen: 1024, MaxInlineLen: MiB},
		Reaper:  Reaper{Interval: Duration(250 * time.Millisecond), Batch: 50, Notifications: false}, SlowLog: Default().SlowLog,
		Index: Index{Prefix: "sp:", Rules: []IndexRule{
			{Name: "express", Pattern: "sess:*", JSONPath: "passport.user", Layout: "global-zset", IndexKey: "idx-session-uid"},
			{Name: "legacy", Pattern: "session:*", Field: "uid", Layout: "zset", IndexKey: "sessions:{uid}"},
		}},
	}
}

// env returns a lookupEnv backed by m.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func wantErrContains(t *testing.T, err error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", subs)
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not contain %q:\n%v", s, err)
		}
	}
}

func TestLoadGood(t *testing.T) {
	tests := []struct {
		name, path string
		want       func() Config
	}{
		{"no file", "", Default},
		{"empty", "testdata/good/empty.yaml", Default},
		{"minimal", "testdata/good/minimal.yaml", func() Config {
			c := Default()
			c.Upstream.Addr = "redis.internal:6379"
			return c
		}},
		{"full", "testdata/good/full.yaml", fullConfig},
		{"example", "sessionproxy.example.yaml", Default},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(tt.path, env(nil), Flags{})
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want(); !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadBad(t *testing.T) {
	tests := []struct {
		name, path string
		is         error // wanted in the chain, if not nil
		want       []string
	}{
		{"missing file", "testdata/nope.yaml", fs.ErrNotExist, []string{"testdata/nope.yaml"}},
		{"unknown field", "testdata/bad/unknown_field.yaml", nil,
			[]string{"testdata/bad/unknown_field.yaml: ", "line 3: field pool_sise not found in type conf.Upstream"}},
		{"bad duration", "testdata/bad/bad_duration.yaml", nil,
			[]string{"testdata/bad/bad_duration.yaml: ", `line 2: invalid duration "2"`}},
		{"bad size", "testdata/bad/bad_size.yaml", nil,
			[]string{"testdata/bad/bad_size.yaml: ", `line 2: invalid size "512mb": unknown unit "mb"`}},
		{"every decode error", "testdata/bad/decode_errors.yaml", nil, []string{
			`line 2: invalid duration "soon"`,
			"line 3: field log_levl not found in type conf.Config",
			"line 5: cannot unmarshal !!str `many` into int",
			`line 6: invalid size "-1"`,
		}},
		{"two documents", "testdata/bad/two_documents.yaml", nil, []string{"more than one YAML document"}},
		{"every invalid field", "testdata/bad/many_bad.yaml", ErrInvalid, []string{
			`listen: want host:port, got "nope"`,
			`metrics: port must be a number from 0 to 65535, got ":http"`,
			"shutdown_timeout: must be > 0, got 0s",
			`log_level: must be one of debug, info, warn, error, got "loud"`,
			`log_format: must be one of text, json, got "xml"`,
			`ordering: must be one of auto, arrival, none, got "random"`,
			"clients.tls.cert_file: required with clients.tls.listen",
			"clients.tls.ca_file: required unless clients.tls.auth_clients is no",
			`clients.tls.protocols: want TLSv1.2 and/or TLSv1.3, got "SSLv3"`,
			"clients.timeout: must be >= 0, got -1s",
			"upstream.command_timeout: must be >= 0, got -5s",
			`upstream.addr: host missing in ":6379"`,
			"upstream.read_timeout: must be > 0, got -1s",
			"upstream.pool_size: must be >= 1, got 0",
			"upstream.tls.key_file: required when upstream.tls.cert_file is set",
			"upstream.tls.ca_file: stat testdata/tls/missing.pem: no such file",
			"limits.max_clients: must be >= 1, got 0",
			"limits.max_bulk_len: must be <= 4GiB, got 5GiB",
			"limits.max_multibulk_len: must be >= 1, got 0",
			"limits.max_inline_len: must be >= 1KiB, got 512B",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.path, env(nil), Flags{})
			wantErrContains(t, err, tt.want...)
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false", tt.is)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"listen on a free port", func(c *Config) { c.Listen = "127.0.0.1:0" }, ""},
		{"listen on all interfaces", func(c *Config) { c.Listen = ":6380" }, ""},
		{"metrics disabled", func(c *Config) { c.Metrics = "" }, ""},
		{"ipv6 upstream", func(c *Config) { c.Upstream.Addr = "[::1]:6379" }, ""},
		{"upstream port 0", func(c *Config) { c.Upstream.Addr = "127.0.0.1:0" }, "upstream.addr: port must be from 1 to 65535"},
		{"pool_size max", func(c *Config) { c.Upstream.PoolSize = 64 }, ""},
		{"pool_size over", func(c *Config) { c.Upstream.PoolSize = 65 }, "upstream.pool_size: must be <= 64, got 65"},
		{"dial_timeout zero", func(c *Config) { c.Upstream.DialTimeout = 0 }, "upstream.dial_timeout: must be > 0, got 0s"},
		{"max_bulk_len max", func(c *Config) { c.Limits.MaxBulkLen = 4 * GiB }, ""},
		{"max_bulk_len over", func(c *Config) { c.Limits.MaxBulkLen = 4*GiB + 1 }, "limits.max_bulk_len: must be <= 4GiB, got 4294967297B"},
		{"max_inline_len min", func(c *Config) { c.Limits.MaxInlineLen = KiB }, ""},
		{"key without cert", func(c *Config) { c.Upstream.TLS.KeyFile = "testdata/tls/client-key.pem" },
			"upstream.tls.cert_file: required when upstream.tls.key_file is set"},
		{"tls file is a directory", func(c *Config) { c.Upstream.TLS.CAFile = "testdata" },
			"upstream.tls.ca_file: testdata is a directory"},
		{"unknown mode", func(c *Config) { c.Upstream.Mode = "replica" },
			`upstream.mode: must be one of standalone, sentinel, cluster, got "replica"`},
		{"sentinel", func(c *Config) {
			c.Upstream.Mode, c.Upstream.Addrs, c.Upstream.Addr = "sentinel", []string{"127.0.0.1:26379"}, ""
		}, ""},
		{"sentinel without sentinels", func(c *Config) { c.Upstream.Mode = "sentinel" },
			"upstream.addrs: must list at least one host:port in sentinel mode"},
		{"sentinel with a bad address", func(c *Config) {
			c.Upstream.Mode, c.Upstream.Addrs = "sentinel", []string{"127.0.0.1:26379", "sentinel-2"}
		}, `upstream.addrs[1]: want host:port, got "sentinel-2"`},
		{"sentinel without a master name", func(c *Config) {
			c.Upstream.Mode, c.Upstream.Addrs, c.Upstream.Sentinel.Master = "sentinel", []string{"127.0.0.1:26379"}, ""
		}, "upstream.sentinel.master: must name the master the sentinels monitor"},
		{"sentinel with tls needs a server name", func(c *Config) {
			c.Upstream.Mode, c.Upstream.Addrs, c.Upstream.TLS.Enabled = "sentinel", []string{"127.0.0.1:26379"}, true
		}, "upstream.tls.server_name: required with TLS in sentinel mode"},
		{"cluster", func(c *Config) {
			c.Upstream.Mode, c.Upstream.Addrs = "cluster", []string{"127.0.0.1:7000", "127.0.0.1:7001"}
		}, ""},
		{"cluster without seeds", func(c *Config) { c.Upstream.Mode = "cluster" },
			"upstream.addrs: must list at least one host:port in cluster mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErrContains(t, err, tt.want)
		})
	}
}

func TestOverlay(t *testing.T) {
	const file = "testdata/good/full.yaml"
	tests := []struct {
		name   string
		env    map[string]string
		flags  Flags
		mutate func(*Config) // applied to fullConfig() to get the wanted result
	}{
		{"file alone", nil, Flags{}, func(*Config) {}},
		{"env beats file", map[string]string{
			"SESSIONPROXY_LISTEN":                  "127.0.0.1:7100",
			"SESSIONPROXY_UPSTREAM_POOL_SIZE":      "3",
			"SESSIONPROXY_UPSTREAM_TLS_CA_FILE":    "",
			"SESSIONPROXY_UPSTREAM_TLS_ENABLED":    "false",
			"SESSIONPROXY_UPSTREAM_DIAL_TIMEOUT":   "1s",
			"SESSIONPROXY_LIMITS_MAX_BULK_LEN":     "2MiB",
			"SESSIONPROXY_UNRELATED_VARIABLE_NAME": "ignored",
		}, Flags{}, func(c *Config) {
			c.Listen = "127.0.0.1:7100"
			c.Upstream.PoolSize = 3
			c.Upstream.TLS.CAFile = "" // set but empty still overrides
			c.Upstream.TLS.Enabled = false
			c.Upstream.DialTimeout = Duration(time.Second)
			c.Limits.MaxBulkLen = 2 * MiB
		}},
		{"flags beat env", map[string]string{
			"SESSIONPROXY_LISTEN":        "127.0.0.1:7100",
			"SESSIONPROXY_UPSTREAM_ADDR": "env:6379",
			"SESSIONPROXY_METRICS":       "127.0.0.1:9100",
		}, Flags{Listen: ptr("127.0.0.1:7200"), Upstream: ptr("flag:6379"), Metrics: ptr("127.0.0.1:9200")}, func(c *Config) {
			c.Listen = "127.0.0.1:7200"
			c.Upstream.Addr = "flag:6379"
			c.Metrics = "127.0.0.1:9200"
		}},
		{"flags not given", map[string]string{"SESSIONPROXY_LISTEN": "127.0.0.1:7100"}, Flags{},
			func(c *Config) { c.Listen = "127.0.0.1:7100" }},
		{"a flag given empty overrides", map[string]string{"SESSIONPROXY_METRICS": "127.0.0.1:9100"},
			Flags{Metrics: ptr("")}, func(c *Config) { c.Metrics = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(file, env(tt.env), tt.flags)
			if err != nil {
				t.Fatal(err)
			}
			want := fullConfig()
			tt.mutate(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestEnvEveryLeaf sets every leaf of fullConfig through the environment alone, so a field
// added later with a type the environment cannot carry fails here.
func TestEnvEveryLeaf(t *testing.T) {
	want := fullConfig()
	want.Index.Rules = Default().Index.Rules // a list is not settable from the environment
	vars := map[string]string{}
	walkLeaves(reflect.ValueOf(&want).Elem(), "", func(path string, v reflect.Value) {
		if l, ok := v.Interface().([]string); ok {
			vars[envName(path)] = strings.Join(l, ",")
			return
		}
		vars[envName(path)] = fmt.Sprint(v.Interface()) // String() for Duration and Size
	})
	for _, name := range []string{"SESSIONPROXY_LISTEN", "SESSIONPROXY_UPSTREAM_ADDR",
		"SESSIONPROXY_UPSTREAM_TLS_CA_FILE", "SESSIONPROXY_LIMITS_MAX_BULK_LEN"} {
		if _, ok := vars[name]; !ok {
			t.Errorf("no leaf maps to %s; have %v", name, slices.Sorted(maps.Keys(vars)))
		}
	}
	got, err := Load("", env(vars), Flags{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestEnvBad(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"duration", map[string]string{"SESSIONPROXY_UPSTREAM_DIAL_TIMEOUT": "2"},
			[]string{`SESSIONPROXY_UPSTREAM_DIAL_TIMEOUT: invalid duration "2"`}},
		{"size", map[string]string{"SESSIONPROXY_LIMITS_MAX_INLINE_LEN": "64k"},
			[]string{`SESSIONPROXY_LIMITS_MAX_INLINE_LEN: invalid size "64k"`}},
		{"bool", map[string]string{"SESSIONPROXY_UPSTREAM_TLS_ENABLED": "yes please"},
			[]string{`SESSIONPROXY_UPSTREAM_TLS_ENABLED: invalid boolean "yes please"`}},
		{"every bad variable", map[string]string{
			"SESSIONPROXY_UPSTREAM_POOL_SIZE":   "two",
			"SESSIONPROXY_LIMITS_MAX_CLIENTS":   "1e4",
			"SESSIONPROXY_SHUTDOWN_TIMEOUT":     "10",
			"SESSIONPROXY_UPSTREAM_TLS_ENABLED": "",
		}, []string{
			`SESSIONPROXY_UPSTREAM_POOL_SIZE: invalid integer "two"`,
			`SESSIONPROXY_LIMITS_MAX_CLIENTS: invalid integer "1e4"`,
			`SESSIONPROXY_SHUTDOWN_TIMEOUT: invalid duration "10"`,
			`SESSIONPROXY_UPSTREAM_TLS_ENABLED: invalid boolean ""`,
		}},
		{"valid env, invalid config", map[string]string{"SESSIONPROXY_UPSTREAM_POOL_SIZE": "0"},
			[]string{"upstream.pool_size: must be >= 1, got 0"}},
		{"sentinels from the environment", map[string]string{"SESSIONPROXY_UPSTREAM_MODE": "sentinel",
			"SESSIONPROXY_UPSTREAM_ADDRS": "127.0.0.1:26379, nohost ,", "SESSIONPROXY_UPSTREAM_SENTINEL_MASTER": ""},
			[]string{`upstream.addrs[1]: want host:port, got "nohost"`, "upstream.sentinel.master: must name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load("", env(tt.env), Flags{})
			wantErrContains(t, err, tt.want...)
		})
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		str     string // String() of want
		wantErr string
	}{
		{in: "512MiB", want: 512 * MiB, str: "512MiB"},
		{in: "64KiB", want: 64 * KiB, str: "64KiB"},
		{in: "1GB", want: 1e9, str: "1000000000B"},
		{in: "1048576", want: MiB, str: "1MiB"},
		{in: " 4 GiB ", want: 4 * GiB, str: "4GiB"},
		{in: "1536B", want: 1536, str: "1536B"},
		{in: "0", want: 0, str: "0B"},
		{in: "8191PiB", want: 8191 * PiB, str: "8191PiB"},
		{in: "", wantErr: "invalid size"},
		{in: "-1", wantErr: "invalid size"},
		{in: "1.5GiB", wantErr: "no fractions"},
		{in: "512mb", wantErr: `unknown unit "mb"`},
		{in: "MiB", wantErr: "invalid size"},
		{in: "8EiB", wantErr: "too large"},
		{in: "99999999999999999999", wantErr: "invalid size"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.wantErr != "" {
				wantErrContains(t, err, tt.wantErr)
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
			if got.String() != tt.str {
				t.Errorf("String() = %q, want %q", got.String(), tt.str)
			}
		})
	}
}

// TestDefaultYAMLRoundTrip decodes DefaultYAML into a zero Config, so a field missing from
// the output shows up as a difference rather than hiding behind its default.
func TestDefaultYAMLRoundTrip(t *testing.T) {
	var got Config
	dec := yaml.NewDecoder(bytes.NewReader(DefaultYAML()))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestExampleFile(t *testing.T) {
	const path = "sessionproxy.example.yaml"
	if *update {
		if err := os.WriteFile(path, DefaultYAML(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, DefaultYAML()) {
		t.Errorf("%s differs from DefaultYAML(); run: go test ./conf -update", path)
	}
}

// TestImports keeps conf free of project packages: only the standard library and yaml.v3.
func TestImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		first, _, _ := strings.Cut(imp, "/")
		if strings.Contains(first, ".") && imp != "gopkg.in/yaml.v3" {
			t.Errorf("conf imports %s; it may use only the standard library and gopkg.in/yaml.v3", imp)
		}
	}
}

func ptr(s string) *string { return &s }

// TestRuleDefaults: a rule in the file takes what the commented default promises for what it
// leaves out: the owner in "userid" unless json_path is set, layout set, index key user:{uid}
// (none for global-zset, which must name its one key).
func TestRuleDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yaml := "index:\n  rules:\n    - name: express\n      pattern: \"sess:*\"\n      json_path: passport.user\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, env(nil), Flags{})
	if err != nil {
		t.Fatal(err)
	}
	want := IndexRule{Name: "express", Pattern: "sess:*", JSONPath: "passport.user", Layout: "set", IndexKey: "user:{uid}"}
	if len(c.Index.Rules) != 1 || c.Index.Rules[0] != want {
		t.Fatalf("rules %+v, want [%+v]", c.Index.Rules, want)
	}
	yaml = "index:\n  rules:\n    - name: g\n      pattern: \"gs:*\"\n      layout: global-zset\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, env(nil), Flags{}); err == nil || !strings.Contains(err.Error(), "index_key") {
		t.Errorf("a global-zset rule without index_key: %v", err)
	}
}

// TestDeployConfigValid: the config the Kubernetes example ships in its ConfigMap loads and
// validates, so the example cannot rot into one that does not start.
func TestDeployConfigValid(t *testing.T) {
	f, err := os.Open("../deploy/kubernetes/sessionproxy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	for {
		var doc struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("no ConfigMap with sessionproxy.yaml found: %v", err)
		}
		if doc.Kind != "ConfigMap" {
			continue
		}
		path := filepath.Join(t.TempDir(), "sessionproxy.yaml")
		if err := os.WriteFile(path, []byte(doc.Data["sessionproxy.yaml"]), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, env(nil), Flags{}); err != nil {
			t.Fatalf("the Kubernetes example's config: %v", err)
		}
		return
	}
}

// TestChanged: the paths of the settings that differ, rules as one.
func TestChanged(t *testing.T) {
	a, b := Default(), Default()
	b.LogLevel, b.Limits.MaxClients, b.Upstream.Addrs = "debug", 5, []string{"x:1"}
	b.Index.Rules = append([]IndexRule{}, b.Index.Rules...)
	b.Index.Rules[0].Field = "uid"
	got := Changed(a, b)
	want := []string{"log_level", "upstream.addrs", "limits.max_clients", "index.rules"}
	if !slices.Equal(got, want) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
	if c := Changed(a, Default()); len(c) != 0 {
		t.Errorf("Changed of equal configs: %v", c)
	}
}

// TestSettings: every setting by its path, secrets only as set, rules one line each.
func TestSettings(t *testing.T) {
	c := Default()
	c.Upstream.Password, c.Upstream.Sentinel.Password = "s3cret", ""
	got := map[string]string{}
	for _, s := range Settings(c) {
		got[s.Path] = s.Value
	}
	for path, want := range map[string]string{
		"upstream.password": "(set)", "upstream.sentinel.password": "", "limits.max_clients": "10000",
		"upstream.command_timeout": "30s", "clients.deny_commands": "",
		"index.rules[0]": "name=session pattern=session:* field=userid json_path= layout=set index_key=user:{uid}",
	} {
		if v, ok := got[path]; !ok || v != want {
			t.Errorf("%s = %q (listed %v), want %q", path, v, ok, want)
		}
	}
	for path, v := range got {
		if strings.Contains(v, "s3cret") {
			t.Errorf("%s shows the secret", path)
		}
	}
}
