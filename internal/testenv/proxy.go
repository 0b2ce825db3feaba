package testenv

import (
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a real server and can stall them: while
// stalled it forwards nothing in either direction, so requests reach the
// server (and replies the client) only once it resumes — what a network
// hiccup or a paused server looks like to a client with a read timeout.
// Tests use it to put a fault between the service and the shared Redis or
// MariaDB without pausing them for everyone else.
type Proxy struct {
	Addr string // where clients connect, "127.0.0.1:port"

	mu      sync.Mutex
	stalled bool
	resume  chan struct{}
	lis     net.Listener
	conns   []net.Conn
}

// StartProxy listens on a free loopback port and forwards to target until
// the test ends.
func StartProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{Addr: lis.Addr().String(), lis: lis, resume: make(chan struct{})}
	close(p.resume)
	go p.accept(target)
	tb.Cleanup(p.close)
	return p
}

func (p *Proxy) accept(target string) {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

// pipe copies src to dst, waiting out stalls between reads.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed side: close the other
		}
	}
}

func (p *Proxy) wait() {
	p.mu.Lock()
	ch := p.resume
	p.mu.Unlock()
	<-ch
}

// Stall holds every byte in both directions until Resume.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		p.stalled = true
		p.resume = make(chan struct{})
	}
}

// Resume delivers what a stall held and forwards again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled {
		p.stalled = false
		close(p.resume)
	}
}

func (p *Proxy) close() {
	p.Resume()
	p.lis.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
