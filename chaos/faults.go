package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Proxy names: each sits on one connection path of the stack.
const (
	proxyShardPrefix = "coupon-mysql-shard-" // + shard number: coupon → one shard database
	proxyRedis       = "coupon-redis"        // coupon → Redis
	proxyNATS        = "coupon-nats"         // coupon's event relay → nats-server
	proxyDTMCoupon   = "dtm-coupon"          // coordinators → coupon (Confirm/Cancel of direct transactions)
	proxyClientDTM   = "client-dtm"          // order service → coordinator A (Prepare/Submit)
)

// Faults is the embedded toxiproxy server: named TCP proxies between the
// stack's processes, with toxics added and removed as JSON the way
// toxiproxy's HTTP API takes them (latency, timeout, reset_peer, bandwidth,
// slicer), and "down" as a disabled proxy. It records every fault injected
// so the report can list them.
type Faults struct {
	server  *toxiproxy.ApiServer
	proxies map[string]*toxiproxy.Proxy

	mu  sync.Mutex
	log []Fault
}

// Fault is one fault injected on a proxy, or one process fault.
type Fault struct {
	Target string         `json:"target"`
	Kind   string         `json:"kind"`
	Attrs  map[string]any `json:"attributes,omitempty"`
	At     time.Time      `json:"at"`
	Healed time.Time      `json:"healed"`
}

func (f Fault) String() string {
	s := f.Kind + "@" + f.Target
	if len(f.Attrs) > 0 {
		keys := make([]string, 0, len(f.Attrs))
		for k := range f.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s += "("
		for i, k := range keys {
			if i > 0 {
				s += ","
			}
			s += fmt.Sprintf("%s=%v", k, f.Attrs[k])
		}
		s += ")"
	}
	if !f.Healed.IsZero() {
		s += fmt.Sprintf(" %.1fs", f.Healed.Sub(f.At).Seconds())
	}
	return s
}

func newFaults() *Faults {
	m := toxiproxy.NewMetricsContainer(prometheus.NewRegistry())
	return &Faults{server: toxiproxy.NewServer(m, zerolog.Nop()), proxies: map[string]*toxiproxy.Proxy{}}
}

// add starts a proxy listening on a free loopback port towards upstream and
// returns its address.
func (f *Faults) add(name, upstream string) (string, error) {
	p := toxiproxy.NewProxy(f.server, name, "127.0.0.1:0", upstream)
	if err := f.server.Collection.Add(p, true); err != nil {
		return "", fmt.Errorf("start proxy %s: %w", name, err)
	}
	f.proxies[name] = p
	return p.Listen, nil
}

func (f *Faults) proxy(name string) (*toxiproxy.Proxy, error) {
	p, ok := f.proxies[name]
	if !ok {
		return nil, fmt.Errorf("no proxy %s", name)
	}
	return p, nil
}

// toxic adds a toxic to proxy name in both directions unless stream says
// which ("upstream": towards the server, "downstream": towards the client).
func (f *Faults) toxic(name, kind, stream string, attrs map[string]any) error {
	p, err := f.proxy(name)
	if err != nil {
		return err
	}
	streams := []string{"upstream", "downstream"}
	if stream != "" {
		streams = []string{stream}
	}
	for _, s := range streams {
		body, err := json.Marshal(map[string]any{"name": kind + "_" + s, "type": kind, "stream": s, "toxicity": 1.0, "attributes": attrs})
		if err != nil {
			return err
		}
		if _, err := p.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
			return fmt.Errorf("add %s toxic to %s: %w", kind, name, err)
		}
	}
	f.record(Fault{Target: name, Kind: kind, Attrs: attrs})
	return nil
}

// down disables proxy name: its listener closes and every connection
// through it is cut, so clients see connection refused until up.
func (f *Faults) down(name string) error {
	p, err := f.proxy(name)
	if err != nil {
		return err
	}
	p.Stop()
	f.record(Fault{Target: name, Kind: "down"})
	return nil
}

// heal removes every toxic and re-enables every proxy, and marks the open
// faults healed.
func (f *Faults) heal(ctx context.Context) error {
	var first error
	for name, p := range f.proxies {
		p.Toxics.ResetToxics(ctx)
		p.Lock()
		enabled := p.Enabled
		p.Unlock()
		if !enabled {
			// The port was ours a moment ago; retry in case a client's
			// connect raced the rebind.
			var err error
			for range 20 {
				if err = p.Start(); err == nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err != nil && first == nil {
				first = fmt.Errorf("re-enable proxy %s: %w", name, err)
			}
		}
	}
	f.mu.Lock()
	now := time.Now()
	for i := range f.log {
		if f.log[i].Healed.IsZero() {
			f.log[i].Healed = now
		}
	}
	f.mu.Unlock()
	return first
}

// record notes a fault (proxies' and process kills alike).
func (f *Faults) record(x Fault) {
	x.At = time.Now()
	f.mu.Lock()
	f.log = append(f.log, x)
	f.mu.Unlock()
}

// since returns the faults recorded from index i on, and the next index.
func (f *Faults) since(i int) ([]Fault, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]Fault(nil), f.log[i:]...)
	return out, len(f.log)
}

func (f *Faults) close() {
	for _, p := range f.proxies {
		p.Stop()
	}
}
