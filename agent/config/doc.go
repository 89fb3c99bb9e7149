// Package config loads and validates Courier's YAML configuration (CONTRACT.md,
// "Configuration"). It owns the schema, the defaults that belong to no component
// (the components' own, like folder.DefaultSettle or uploader.DefaultChunkSize, are
// referred to, not copied) and the messages that name the file, the key and the
// problem. It must not start anything: it reads files only to check that the
// paths a configuration names exist and that secrets are private.
//
// The files split along the seams:
//   - load.go: reading YAML, ${ENV} expansion, the node-tree decoder that names
//     each key with its own line (problem.go: Error, Errors, suggestions);
//   - schema.go: the types, their keys and defaults (ApplyDefaults);
//   - units.go: sizes (go-humanize units) and durations (Go syntax, 7d, 1w);
//   - validate.go: every rule, as errors or warnings;
//   - overlay.go: a pushed (remote) document over the local file, and the
//     digest of an effective configuration.
package config
