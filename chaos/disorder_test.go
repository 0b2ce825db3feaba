package chaos

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// refusal is the coupon service's answer to a refused Try: Aborted with
// the reason in an ErrorInfo.
func refusal(t *testing.T, reason string) error {
	t.Helper()
	st, err := status.New(codes.Aborted, "refused").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "coupon"})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

func disorderByName(t *testing.T, name string) disorder {
	t.Helper()
	for _, d := range disorders {
		if d.name == name {
			return d
		}
	}
	t.Fatalf("no disorder %q", name)
	return disorder{}
}

// TestDisorderExpectsAbortAtDailyCap: for a user already at the daily cap
// every Try is refused, so every disorder sequence must expect its
// transactions to abort, and the checks must then find nothing wrong with
// the coupon the service rightly left AVAILABLE (issue: branch-disorder
// recorded commit from the plan and blamed a correct service).
func TestDisorderExpectsAbortAtDailyCap(t *testing.T) {
	capped := refusal(t, "DAILY_USE_LIMIT_REACHED")
	for _, d := range disorders {
		t.Run(d.name, func(t *testing.T) {
			var tries int
			exp := d.play(func(st step) error {
				if st.op == "try" {
					tries++
					return capped
				}
				return nil // Confirm and Cancel of nothing answer OK
			})
			if tries == 0 {
				t.Fatalf("%s sent no Try", d.name)
			}
			for label, e := range exp {
				if e.want != "abort" {
					t.Errorf("%s gid %s: got want %q, want abort", d.name, label, e.want)
				}
				if d.plan[label] == "commit" && (e.why != abortRefusal || e.reason != "DAILY_USE_LIMIT_REACHED") {
					t.Errorf("%s gid %s: got why %q reason %q, want a refusal for DAILY_USE_LIMIT_REACHED", d.name, label, e.why, e.reason)
				}
			}
			// What quiesce makes of the expectations, against the
			// coupon as the service left it: AVAILABLE, no ledger row.
			code, order := "C1", "o1"
			sn := snap([]couponRow{{Code: code, Status: couponAvailable, UserID: 7}}, nil, nil, nil)
			var views []txnView
			for label, e := range exp {
				st := statusFailed
				if e.want == "commit" {
					st = statusSucceed
				}
				views = append(views, txnView{gid: "g-" + label, orderNo: order, coupon: code, user: 7, status: st, own: true})
			}
			v := newVerdict()
			checkTransactions(v, sn, views)
			for id := 1; id <= 2; id++ {
				if v.inv[id].Status != held {
					t.Errorf("invariant %d: got %s %v, want held", id, v.inv[id].Status, v.inv[id].Details)
				}
			}
		})
	}
}

// TestDisorderExpectations: answers decide, the plan only says what the
// order service meant: an accepted Try commits a transaction meant to
// commit, a lost answer leaves it to the ledger, a deliberate rollback
// stays one.
func TestDisorderExpectations(t *testing.T) {
	lost := status.Error(codes.Unavailable, "connection reset")
	notAvailable := refusal(t, "COUPON_NOT_AVAILABLE")
	tests := []struct {
		name   string
		answer func(step) error
		want   map[string]expectation
	}{
		{"foreign-try-same-order", func(st step) error {
			if st.gid == "b" && st.op == "try" {
				return notAvailable
			}
			return nil
		}, map[string]expectation{"a": {want: "commit"}, "b": {want: "abort", why: abortDeliberate, reason: "COUPON_NOT_AVAILABLE"}}},
		{"confirm-twice", func(st step) error {
			if st.op == "try" {
				return lost
			}
			return nil
		}, map[string]expectation{"a": {want: wantUnknown, why: abortFault}}},
		{"try-twice-confirm", func(st step) error {
			if st.op == "try" {
				return errors.Join(lost) // the first answer lost, the retry too
			}
			return nil
		}, map[string]expectation{"a": {want: wantUnknown, why: abortFault}}},
		{"cancel-names-foreign-coupon", func(st step) error {
			if st.gid == "b" && st.op == "try" {
				return refusal(t, "NOT_OWNER")
			}
			return nil
		}, map[string]expectation{"a": {want: "commit"}, "b": {want: "abort", why: abortRefusal, reason: "NOT_OWNER"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := disorderByName(t, tt.name).play(tt.answer)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(expectation{})); diff != "" {
				t.Errorf("expectations (-want +got):\n%s", diff)
			}
		})
	}
}

// TestResolveUndecided: a direct sequence whose Try answer was lost counts
// as committed only if the ledger has its own CONSUME row.
func TestResolveUndecided(t *testing.T) {
	sn := snap(nil, []ledgerRow{{Op: "CONSUME", Code: "C1", GID: "g1", OrderNo: "o1"}}, nil, nil)
	ts := []txnView{
		{gid: "g1", coupon: "C1", status: statusUndecided},
		{gid: "g2", coupon: "C1", status: statusUndecided},
		{gid: "g3", coupon: "C3", status: statusSucceed},
	}
	resolveUndecided(ts, sn)
	got := []string{ts[0].status, ts[1].status, ts[2].status}
	if want := []string{statusSucceed, statusFailed, statusSucceed}; !cmp.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
