package redis

import (
	"context"
	"errors"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Concurrent calls on the claim path (request markers, stock takes) are
// sent together: a few workers each drain whatever calls have queued and
// send them as one pipeline, so a burst of claims costs a handful of
// round trips and syscalls instead of one each. An idle service sends each
// call at once.

const (
	pipeWorkers = 4
	pipeMax     = 256
	pipeQueue   = 8192
)

type pipeOp struct {
	ctx   context.Context
	build func(goredis.Pipeliner) goredis.Cmder
	cmd   goredis.Cmder
	done  chan struct{}
}

// errClosed answers a call made after Close; it was never sent.
var errClosed = errors.New("redis adapter closed")

// The channel of queued calls is never closed: a call may race Close (a
// background give-back outliving a shutdown did, and the send panicked).
// Close closes quit instead; the workers send what is queued and stop,
// and a call still waiting after they stopped was never sent.
type pipe struct {
	rdb     goredis.UniversalClient
	ch      chan *pipeOp
	quit    chan struct{}
	stopped chan struct{}
	close   sync.Once
}

func newPipe(rdb goredis.UniversalClient) *pipe {
	p := &pipe{rdb: rdb, ch: make(chan *pipeOp, pipeQueue), quit: make(chan struct{}), stopped: make(chan struct{})}
	var wg sync.WaitGroup
	for range pipeWorkers {
		wg.Go(p.run)
	}
	go func() { wg.Wait(); close(p.stopped) }()
	return p
}

// shut stops the workers once the calls queued so far are answered.
func (p *pipe) shut() {
	p.close.Do(func() { close(p.quit) })
	<-p.stopped
}

func (p *pipe) run() {
	for {
		var first *pipeOp
		select {
		case first = <-p.ch:
		case <-p.quit:
			select {
			case first = <-p.ch: // drain what was queued before Close
			default:
				return
			}
		}
		ops := []*pipeOp{first}
	fill:
		for len(ops) < pipeMax {
			select {
			case op := <-p.ch:
				ops = append(ops, op)
			default:
				break fill
			}
		}
		// The pipeline is not tied to one caller's context; each command
		// is bounded by the client's read and write timeouts.
		_, _ = p.rdb.Pipelined(context.Background(), func(pl goredis.Pipeliner) error {
			for _, op := range ops {
				op.cmd = op.build(pl)
			}
			return nil
		})
		for _, op := range ops {
			close(op.done)
		}
	}
}

// do runs one command through the pipeline and returns it once answered.
// ctx is honoured until the command is queued; once it may have been sent
// the answer is awaited (bounded by the client's read timeout), because a
// caller that gave up on a stock take that then ran would leave its unit
// taken with no claim to write or give it back.
// A script the server does not know yet (NOSCRIPT after a restart or on a
// new cluster node) is retried on its own, which loads it.
func (p *pipe) do(ctx context.Context, build func(goredis.Pipeliner) goredis.Cmder, retry func() goredis.Cmder) goredis.Cmder {
	op := &pipeOp{ctx: ctx, build: build, done: make(chan struct{})}
	gaveUp := func() goredis.Cmder {
		cmd := goredis.NewCmd(ctx)
		cmd.SetErr(ctx.Err())
		return cmd
	}
	closed := func() goredis.Cmder {
		cmd := goredis.NewCmd(ctx)
		cmd.SetErr(errClosed)
		return cmd
	}
	select {
	case <-p.quit:
		return closed()
	default:
	}
	select {
	case p.ch <- op:
	case <-ctx.Done():
		return gaveUp()
	case <-p.quit:
		return closed()
	}
	select {
	case <-op.done:
	case <-p.stopped:
		select {
		case <-op.done: // answered by the last batch
		default:
			return closed() // queued after the workers' last look: never sent
		}
	}
	if err := op.cmd.Err(); err != nil && retry != nil && isNoScript(err) {
		return retry()
	}
	return op.cmd
}

func isNoScript(err error) bool {
	return err != nil && !errors.Is(err, goredis.Nil) && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
