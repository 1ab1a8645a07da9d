//go:build !unix

package app

// lockDatabase does nothing where flock is missing: run one lastmile serve
// per database.
func lockDatabase(string) (func(keep bool), error) { return func(bool) {}, nil }
