// Command events is a minimal consumer of the coupon service's lifecycle
// events: it reads the COUPON_EVENTS stream with a durable consumer,
// acknowledges each event after applying it, drops resends by event ID and
// keeps a projection (how many coupons are in each state), printing each
// event and the projection as it goes.
//
//	go run ./examples/events --nats nats://127.0.0.1:4223
//
// A projection rebuilt from scratch starts a new consumer at the start of
// the stream (a fresh --durable name): the events carry
// every change in order per coupon, so replaying them gives the same state.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
)

func main() {
	url := flag.String("nats", "nats://127.0.0.1:4223", "NATS URL (the local stack's)")
	durable := flag.String("durable", "example-projection", "durable consumer name; a new name starts a new projection")
	limit := flag.Int("n", 0, "stop after this many events (0: run until interrupted)")
	quiet := flag.Bool("quiet", false, "print only the projection at the end")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *durable, *limit, *quiet); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

// projection is what a downstream team might keep: each coupon's latest
// state and the last sequence applied, which makes resends and
// out-of-date redeliveries harmless.
type projection struct {
	seen  map[string]bool  // event IDs applied (a real consumer keeps a window or the per-coupon sequence)
	seq   map[string]int64 // coupon code → last sequence applied
	state map[string]string
}

var stateAfter = map[string]string{
	"coupon.claimed": "AVAILABLE", "coupon.locked": "LOCKED", "coupon.used": "USED",
	"coupon.released": "AVAILABLE", "coupon.returned": "AVAILABLE", "coupon.expired": "EXPIRED",
}

// apply applies e once; it reports false for a resend.
func (p *projection) apply(e *couponeventsv1.Event) bool {
	if p.seen[e.GetId()] {
		return false
	}
	p.seen[e.GetId()] = true
	if code := e.GetCouponCode(); code != "" {
		if e.GetSequence() <= p.seq[code] {
			return false // older than what is applied: a redelivery
		}
		p.seq[code] = e.GetSequence()
		if s, ok := stateAfter[e.GetType()]; ok {
			p.state[code] = s
		}
	}
	return true
}

func (p *projection) String() string {
	counts := map[string]int{}
	for _, s := range p.state {
		counts[s]++
	}
	var parts []string
	for s, n := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", s, n))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d coupons: %s", len(p.state), strings.Join(parts, " "))
}

func run(ctx context.Context, url, durable string, limit int, quiet bool) error {
	nc, err := nats.Connect(url, nats.Name("coupon-events-example"))
	if err != nil {
		return fmt.Errorf("connect %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "COUPON_EVENTS", jetstream.ConsumerConfig{
		Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: "coupon.events.>", AckWait: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("consumer %s on COUPON_EVENTS: %w", durable, err)
	}
	p := &projection{seen: map[string]bool{}, seq: map[string]int64{}, state: map[string]string{}}
	n := 0
	defer func() { fmt.Println(p) }()
	for limit == 0 || n < limit {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			var e couponeventsv1.Event
			if err := proto.Unmarshal(m.Data(), &e); err != nil {
				// A body this consumer cannot read: stop redelivering it.
				_ = m.Term()
				continue
			}
			if p.apply(&e) && !quiet {
				fmt.Printf("%s %-16s %s seq=%d user=%d order=%s discount=%d\n", e.GetOccurredAt().AsTime().Format(time.RFC3339),
					e.GetType(), e.GetCouponCode(), e.GetSequence(), e.GetUserId(), e.GetOrderNo(), e.GetDiscountAmount())
			}
			// Acknowledge after applying: a crash before the ack redelivers
			// the event, and apply drops it if it was applied.
			if err := m.Ack(); err != nil {
				return err
			}
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return nil
}
