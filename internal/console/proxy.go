package console

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies are the addresses of the reverse proxies in front of the HTTP
// listener (config http.trusted_proxies). Only a request whose connection
// comes from one of them has its X-Forwarded-For and X-Forwarded-Proto
// believed; from anyone else those headers are the caller's own words.
type Proxies struct {
	prefixes []netip.Prefix
}

// ParseProxies reads trusted proxy addresses: IP addresses ("10.0.0.7")
// or CIDR ranges ("10.0.0.0/8", "::1/128").
func ParseProxies(list []string) (Proxies, error) {
	var p Proxies
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			pre, err := netip.ParsePrefix(s)
			if err != nil {
				return Proxies{}, fmt.Errorf("trusted proxy %q: %w", s, err)
			}
			p.prefixes = append(p.prefixes, pre.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return Proxies{}, fmt.Errorf("trusted proxy %q: not an IP address or CIDR range", s)
		}
		a = a.Unmap()
		p.prefixes = append(p.prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	return p, nil
}

// trusted reports whether addr (an IP, without port) is a trusted proxy.
func (p Proxies) trusted(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, pre := range p.prefixes {
		if pre.Contains(addr) {
			return true
		}
	}
	return false
}

func peerAddr(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// ClientIP is the address of the client that sent r: the connection's
// peer, or, when the peer is a trusted proxy, the right-most address of
// X-Forwarded-For that is not itself a trusted proxy. Addresses left of it
// were written by the client and are not believed.
func (p Proxies) ClientIP(r *http.Request) string {
	peer, ok := peerAddr(r)
	if !ok {
		return r.RemoteAddr
	}
	if !p.trusted(peer) {
		return peer.String()
	}
	hops := forwardedValues(r.Header, "X-Forwarded-For")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			// Garbage from a hop we cannot place: stop at the last
			// address a trusted proxy vouched for.
			break
		}
		client = a.Unmap()
		if !p.trusted(client) {
			break
		}
	}
	return client.String()
}

// HTTPS reports whether the browser's connection is HTTPS: r came over
// TLS, or from a trusted proxy whose X-Forwarded-Proto says https. With
// proxies that append to the header, any hop saying https counts: a cookie
// marked Secure by mistake is only not sent back over plain HTTP, while
// one left unmarked could leak.
func (p Proxies) HTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	peer, ok := peerAddr(r)
	if !ok || !p.trusted(peer) {
		return false
	}
	for _, v := range forwardedValues(r.Header, "X-Forwarded-Proto") {
		if strings.EqualFold(v, "https") {
			return true
		}
	}
	return false
}

// forwardedValues are the comma-separated values of every line of header
// key, in order.
func forwardedValues(h http.Header, key string) []string {
	var out []string
	for _, line := range h.Values(key) {
		for _, v := range strings.Split(line, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}
