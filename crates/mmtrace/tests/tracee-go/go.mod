// The Tracee consumer of the tracee_types test: Tracee v0.24.1's types module, at the version
// Tracee v0.24.1's own go.mod requires (the module has no tag of its own). go.sum holds the
// hashes Tracee's go.sum holds, so a module cache filled from a clone (scripts/test-deps
// --tracee DIR) must match what the module proxy serves.
module mmtrace.test/tracee

go 1.24

require github.com/aquasecurity/tracee/types v0.0.0-20250902170041-945d17d40601
