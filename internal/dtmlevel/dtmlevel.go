// Package dtmlevel sets LOG_LEVEL before the DTM logger reads it.
//
// github.com/dtm-labs/logger reads LOG_LEVEL in its init and prints
// "invalid log level" to stderr when it is unset, then logs every branch call
// at info. Importing this package for its side effect from a main package
// defaults LOG_LEVEL to WARN. It runs first because the Go spec (since 1.21)
// initialises packages in import-path order among those whose imports are
// done: this package imports only os, and sorts before go.uber.org/zap, which
// the DTM logger waits for.
package dtmlevel

import "os"

func init() {
	if os.Getenv("LOG_LEVEL") == "" {
		_ = os.Setenv("LOG_LEVEL", "WARN")
	}
}
