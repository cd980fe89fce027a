// Package conf owns sessionproxy's configuration: the Config model, its
// defaults, how they are overlaid, and validation.
//
// A Config is built in one order, each step overriding the one before:
//
//  1. Default(), a complete and valid configuration;
//  2. the YAML file, if any (unknown fields are errors, so typos do not pass silently);
//  3. the environment, one SESSIONPROXY_<YAML_PATH> variable per leaf field
//     (e.g. SESSIONPROXY_UPSTREAM_TLS_CA_FILE), set-but-empty counts as set;
//  4. command-line flags, where an empty value means "not given".
//
// Validate then checks the result and names every bad field by its YAML path.
// Durations and sizes are typed (Duration, Size); no field uses 0 or -1 to mean
// "unlimited" or "unset".
//
// What conf must not do: import any other sessionproxy package, know how the
// values are used (cmd turns a Config into each package's options), or do I/O
// beyond reading the config file and checking that the TLS files it names exist.
package conf
