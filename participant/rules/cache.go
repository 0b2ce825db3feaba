package rules

import (
	"container/list"
	"sync"
)

// Cache holds compiled rules keyed by source, so each template version's
// rule is compiled once however many orders it is matched against. It keeps
// the most recently used max sources, failures included, and is safe for
// concurrent use. Concurrent Gets of a new source compile it once.
type Cache struct {
	max int

	mu      sync.Mutex
	entries map[string]*list.Element // of *cacheEntry
	recent  list.List                // most recently used first
}

type cacheEntry struct {
	src  string
	once sync.Once
	rule *Rule
	err  error
}

// NewCache returns a cache of at most size rules; size below 1 counts as 1.
func NewCache(size int) *Cache {
	return &Cache{max: max(size, 1), entries: make(map[string]*list.Element)}
}

// Get returns the compiled rule for src, compiling it on first use. Its
// errors are those of Compile.
func (c *Cache) Get(src string) (*Rule, error) {
	if len(src) > MaxSourceBytes {
		return Compile(src) // rejected; not worth a slot
	}
	c.mu.Lock()
	el, ok := c.entries[src]
	if ok {
		c.recent.MoveToFront(el)
	} else {
		el = c.recent.PushFront(&cacheEntry{src: src})
		c.entries[src] = el
		if c.recent.Len() > c.max {
			oldest := c.recent.Back()
			c.recent.Remove(oldest)
			delete(c.entries, oldest.Value.(*cacheEntry).src)
		}
	}
	e := el.Value.(*cacheEntry)
	c.mu.Unlock()

	e.once.Do(func() { e.rule, e.err = Compile(src) })
	return e.rule, e.err
}

// Len returns the number of sources cached.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recent.Len()
}
