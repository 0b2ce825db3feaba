// Package explore holds the interleaving explorer: a test that drives the
// coupon domain service on real MariaDB and Redis through every order, up
// to a bound, in which DTM can deliver the branch calls that touch one
// coupon, and checks the money invariants after each schedule. The bound
// and what it covers are in docs/explorer.md.
package explore
