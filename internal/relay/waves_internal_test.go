package relay

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/opencoupon/coupon/participant/mysql"
)

// TestWaves: a coupon's (or template's) events go out one wave apart, in
// row order; unrelated events share the first wave.
func TestWaves(t *testing.T) {
	ev := func(coupon, template, seq int64) mysql.OutboxEvent {
		return mysql.OutboxEvent{CouponID: coupon, TemplateID: template, Seq: seq}
	}
	tests := []struct {
		name string
		evs  []mysql.OutboxEvent
		want [][]int
	}{
		{"none", nil, nil},
		{"distinct coupons: one wave", []mysql.OutboxEvent{ev(1, 9, 1), ev(2, 9, 1), ev(3, 9, 1)}, [][]int{{0, 1, 2}}},
		{"one coupon: a wave each", []mysql.OutboxEvent{ev(1, 9, 1), ev(1, 9, 2), ev(1, 9, 3)}, [][]int{{0}, {1}, {2}}},
		{"mixed", []mysql.OutboxEvent{ev(1, 9, 1), ev(2, 9, 4), ev(1, 9, 2), ev(0, 9, 7), ev(2, 9, 5), ev(0, 9, 8), ev(0, 8, 1)},
			[][]int{{0, 1, 3, 6}, {2, 4, 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, waves(tt.evs)); diff != "" {
				t.Errorf("waves (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWholeRowsUpTo(t *testing.T) {
	rows := func(ns ...int64) []mysql.OutboxEvent {
		var out []mysql.OutboxEvent
		for _, r := range ns {
			out = append(out, mysql.OutboxEvent{Row: r})
		}
		return out
	}
	tests := []struct {
		name  string
		evs   []mysql.OutboxEvent
		limit int
		want  int
	}{
		{"under the limit", rows(1, 2, 2), 5, 3},
		{"a row across the limit is kept whole", rows(1, 1, 2, 2, 2, 3), 3, 5},
		{"cut at a row's start", rows(1, 1, 2, 3), 2, 2},
		{"one row larger than the limit", rows(1, 1, 1, 1), 2, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := len(wholeRowsUpTo(tt.evs, tt.limit)); got != tt.want {
				t.Errorf("kept %d events, want %d", got, tt.want)
			}
		})
	}
}
