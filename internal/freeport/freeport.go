// Package freeport hands out loopback ports for child processes that must
// be told their port before they start (a coordinator, a coupon service, a
// proxy in front of one).
//
// Asking the kernel for port 0 and closing the listener is not enough: the
// port comes from the ephemeral range, so any outgoing connection or any
// other ":0" listener on the machine may take it before the child binds.
// CI runs many test packages at once, and it happened. Ports here come from
// below the ephemeral range, where the kernel never hands one out on its
// own, and each is reserved across processes by a file, so that two test
// binaries picking at the same moment never pick the same port.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

const (
	low  = 20000 // inclusive; well above the well-known and registered ports in use here (3306, 6379, 9090…)
	high = 32000 // exclusive; Linux's ephemeral range starts at 32768
	// A reservation this old belongs to a run that is over: ports are
	// reused after it, so the reservation directory stays small.
	reservationTTL = 30 * time.Minute
)

// Port returns a loopback TCP port that is free now and that no other
// caller of Port, in this process or another, is handed for the next half
// hour.
func Port() (int, error) {
	dir := filepath.Join(os.TempDir(), "coupon-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	for range 200 {
		p := low + rand.IntN(high-low)
		if !reserve(dir, p) {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // something bound it without asking us
		}
		_ = l.Close()
		return p, nil
	}
	return 0, errors.New("free port: none found in 200 tries")
}

// Addr returns "127.0.0.1:PORT" for a Port.
func Addr() (string, error) {
	p, err := Port()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// reserve claims port p for this process by creating its file; a file
// older than reservationTTL is taken over.
func reserve(dir string, p int) bool {
	name := filepath.Join(dir, strconv.Itoa(p))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err == nil {
		_ = f.Close()
		return true
	}
	st, err := os.Stat(name)
	if err != nil || time.Since(st.ModTime()) < reservationTTL {
		return false
	}
	// Take a stale file over by moving it aside first: of two takers only
	// one rename finds it, and only one O_EXCL create then succeeds.
	aside := name + ".stale." + strconv.Itoa(os.Getpid())
	if err := os.Rename(name, aside); err != nil {
		return false
	}
	_ = os.Remove(aside)
	f, err = os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}
