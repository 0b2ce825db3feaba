package mysql

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/opencoupon/coupon/participant"
	couponeventsv1 "github.com/opencoupon/coupon/proto/coupon/events/v1"
)

// published is e as the generated message, field by field: what
// appendEvent must encode.
func published(e OutboxEvent) *couponeventsv1.Event {
	return &couponeventsv1.Event{
		Id: e.EventID, Type: e.Type, SchemaVersion: 1, OccurredAt: timestamppb.New(e.OccurredAt),
		CouponCode: e.CouponCode, CouponId: e.CouponID, UserId: e.UserID, TemplateId: e.TemplateID, Sequence: e.Seq,
		OrderNo: e.OrderNo, Gid: e.GID, BranchId: e.BranchID, DiscountAmount: e.DiscountAmount, RequestId: e.RequestID,
		TemplateVersion: e.TemplateVersion, StockAdded: e.StockAdded,
	}
}

// TestOutboxRowRoundTrip: a row's events read back as written, in order,
// each with its published form.
func TestOutboxRowRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 123456000, time.UTC)
	evs := []OutboxEvent{
		{EventID: "A1.1", Type: participant.EventClaimed, CouponID: 1, CouponCode: "A1", UserID: 7, TemplateID: 3, Seq: 1, RequestID: "r-1", OccurredAt: at},
		{EventID: "A1.2", Type: participant.EventLocked, CouponID: 1, CouponCode: "A1", UserID: 7, TemplateID: 3, Seq: 2,
			OrderNo: "o-1", GID: "g-1", BranchID: "01", DiscountAmount: 500, OccurredAt: at.Add(time.Second)},
		{EventID: "template-3.v2", Type: participant.EventTemplateChanged, TemplateID: 3, TemplateVersion: 2, OccurredAt: at},
		{EventID: "stock-3.r-9", Type: participant.EventStockAdded, TemplateID: 3, StockAdded: 100, RequestID: "r-9", OccurredAt: at},
	}
	got, err := decodeEvents(42, EncodeEvents(evs), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range evs {
		evs[i].Row = 42
		var m couponeventsv1.Event
		if err := proto.Unmarshal(got[i].Data, &m); err != nil {
			t.Fatalf("event %d: published form: %v", i, err)
		}
		if !proto.Equal(&m, published(evs[i])) {
			t.Errorf("event %d: published form %v, want %v", i, &m, published(evs[i]))
		}
		got[i].Data = nil
		// What proto.Marshal writes reads back the same.
		b, err := proto.Marshal(published(evs[i]))
		if err != nil {
			t.Fatal(err)
		}
		d, err := decodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		d.Row = 42
		if diff := cmp.Diff(evs[i], d); diff != "" {
			t.Errorf("event %d from proto.Marshal (-written +read):\n%s", i, diff)
		}
	}
	if diff := cmp.Diff(evs, got); diff != "" {
		t.Errorf("read back (-written +read):\n%s", diff)
	}
	if _, err := decodeEvents(1, []byte{0x0a, 0x05, 0x01}, nil); err == nil {
		t.Error("a truncated row: want an error")
	}
}
