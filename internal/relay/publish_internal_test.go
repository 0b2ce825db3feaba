package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
)

func answer(subject, data string, header nats.Header) *nats.Msg {
	return &nats.Msg{Subject: subject, Data: []byte(data), Header: header}
}

// TestPubAckError: only an acknowledgement of a stored (or duplicate)
// message counts; errors, statuses and anything else do not.
func TestPubAckError(t *testing.T) {
	tests := []struct {
		name, data string
		header     nats.Header
		wantErr    string
	}{
		{name: "stored", data: `{"stream":"COUPON_EVENTS","seq":42}`},
		{name: "duplicate", data: `{"stream":"COUPON_EVENTS","seq":42,"duplicate":true}`},
		{name: "refused", data: `{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"COUPON_EVENTS"}`, wantErr: "maximum messages exceeded"},
		{name: "no stream", header: nats.Header{"Status": []string{"503"}}, wantErr: `status "503"`},
		{name: "not an ack", data: `{"stream":"COUPON_EVENTS"}`, wantErr: "unexpected answer"},
		{name: "garbage with error", data: `"error"`, wantErr: "unexpected answer"},
		{name: "error field without error", data: `{"stream":"COUPON_EVENTS","seq":0,"error":null}`, wantErr: "unexpected answer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pubAckError(answer("x", tt.data, tt.header))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}

// TestAcksMatchAnswersToTheirWave: answers find their message by subject,
// may come before the wave is fully sent, count once, and are dropped once
// their wave ended.
func TestAcksMatchAnswersToTheirWave(t *testing.T) {
	a := &acks{inbox: "_INBOX.t", waves: map[uint64]*wave{}}
	ok := `{"stream":"S","seq":1}`
	old := a.start(2)
	w := a.start(4)
	a.receive(answer(w.prefix+"0", ok, nil)) // before sent
	a.receive(answer(w.prefix+"0", `{"error":{"code":500,"description":"late copy"}}`, nil))
	a.receive(answer(w.prefix+"2", `{"error":{"code":500,"description":"disk"}}`, nil))
	a.receive(answer(w.prefix+"9", ok, nil))      // no such message
	a.receive(answer(old.prefix+"1", ok, nil))    // another wave
	a.receive(answer("_INBOX.tx.1.1", ok, nil))   // another inbox
	a.receive(answer(a.inbox+".nope.1", ok, nil)) // not ours
	a.sent(w, 3)                                  // message 3 was never sent
	ctx := context.Background()
	if err := a.wait(ctx, w, 50*time.Millisecond); err == nil {
		t.Fatal("wave done with message 1 unanswered")
	}
	a.receive(answer(w.prefix+"1", ok, nil))
	if err := a.wait(ctx, w, time.Minute); err != nil {
		t.Fatalf("wave not done after its 3 answers: %v", err)
	}
	acked, err := a.end(w)
	if diff := cmp.Diff([]bool{true, true, false, false}, acked); diff != "" {
		t.Errorf("acked (-want +got):\n%s", diff)
	}
	if err == nil || !strings.Contains(err.Error(), "disk") || strings.Contains(err.Error(), "late copy") {
		t.Errorf("err = %v, want message 2's refusal only", err)
	}
	a.receive(answer(w.prefix+"3", ok, nil)) // after the end
	if acked[3] {
		t.Error("an answer after the wave's end counted")
	}
	if oldAcked, _ := a.end(old); oldAcked[1] != true {
		t.Error("the other wave lost its answer")
	}
	if len(a.waves) != 0 {
		t.Errorf("%d waves left open", len(a.waves))
	}
}
