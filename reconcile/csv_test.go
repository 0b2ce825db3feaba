package reconcile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencoupon/coupon/reconcile"
)

func writeFile(tb testing.TB, name, body string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

const (
	ordersHeader   = "order_no,user_id,status,amount,coupon_code,discount_amount,payable_amount,updated_at\n"
	paymentsHeader = "payment_id,order_no,status,amount,updated_at\n"
	couponsHeader  = "order_no,coupon_code,op,discount_amount,user_id,template_id,gid,created_at\n"
)

// TestCSVErrors checks that every bad input names the file, the line and
// the column, and that nothing is read past it.
func TestCSVErrors(t *testing.T) {
	tests := []struct {
		name, file, body string
		want             []string // substrings of the error
	}{
		{"empty file", "orders.csv", "", []string{"orders.csv:1:", "bad header", "empty"}},
		{"missing column", "orders.csv", "order_no,user_id,status,amount,coupon_code,discount_amount,updated_at\n",
			[]string{"orders.csv:1:", "bad header", `missing column "payable_amount"`}},
		{"duplicate column", "payments.csv", "payment_id,order_no,status,amount,updated_at,amount\n", []string{"payments.csv:1:", `column "amount" appears twice`}},
		{"bad amount", "orders.csv", ordersHeader + "o1,1,PAID,100,,0,100,2026-03-10T10:00:00Z\no2,1,PAID,12x,,0,100,2026-03-10T10:00:00Z\n",
			[]string{"orders.csv:3:", `column 4 "amount"`, `"12x"`}},
		{"negative amount", "payments.csv", paymentsHeader + "p1,o1,CAPTURED,-5,2026-03-10T10:00:00Z\n", []string{"payments.csv:2:", `column 4 "amount"`}},
		{"bad status", "orders.csv", ordersHeader + "o1,1,paid,100,,0,100,2026-03-10T10:00:00Z\n", []string{"orders.csv:2:", `column 3 "status"`, "PENDING, PAID, CANCELLED, REFUNDED"}},
		{"bad op", "coupons.csv", couponsHeader + "o1,C1,USE,10,1,1,g,2026-03-10T10:00:00Z\n", []string{"coupons.csv:2:", `column 3 "op"`, "LOCK, CONSUME, RELEASE, RETURN"}},
		{"bad time", "coupons.csv", couponsHeader + "o1,C1,LOCK,10,1,1,g,2026-03-10 10:00:00\n", []string{"coupons.csv:2:", `column 8 "created_at"`, "RFC 3339"}},
		{"impossible date", "payments.csv", paymentsHeader + "p1,o1,CAPTURED,5,2026-02-30T10:00:00Z\n", []string{"payments.csv:2:", `column 5 "updated_at"`}},
		{"field count", "payments.csv", paymentsHeader + "p1,o1,CAPTURED,5\n", []string{"payments.csv:2:", "4 fields, the header has 5"}},
		{"line after a quoted line break", "payments.csv", paymentsHeader + "\"p\n1\",o1,CAPTURED,5,2026-03-10T10:00:00Z\np2,o2,CAPTURED,x,2026-03-10T10:00:00Z\n",
			[]string{"payments.csv:4:", `column 4 "amount"`}},
		{"unclosed quote", "payments.csv", paymentsHeader + "\"p1,o1,CAPTURED,5,2026-03-10T10:00:00Z\n", []string{"payments.csv:2:", "quoted field not closed"}},
		{"empty order_no", "coupons.csv", couponsHeader + ",C1,LOCK,10,1,1,g,2026-03-10T10:00:00Z\n", []string{"coupons.csv:2:", `column 1 "order_no"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.file, tt.body)
			w := reconcile.Window{Start: 0, End: 1 << 62, AsOf: 1 << 62}
			var err error
			n := 0
			switch tt.file {
			case "orders.csv":
				err = reconcile.CSVOrders{Path: p}.ReadOrders(context.Background(), w, func(*reconcile.Order) error { n++; return nil })
			case "payments.csv":
				err = reconcile.CSVPayments{Path: p}.ReadPayments(context.Background(), w, func(*reconcile.Payment) error { n++; return nil })
			default:
				err = reconcile.CSVCoupons{Path: p}.ReadLedger(context.Background(), w, func(*reconcile.Entry) error { n++; return nil })
			}
			if err == nil {
				t.Fatalf("read %d rows and no error; want one containing %q", n, tt.want)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file %s", err, p)
			}
		})
	}
}

// TestCSVValues checks the values read: quoting, CRLF, column order,
// optional branch_id, time zones and fractions.
func TestCSVValues(t *testing.T) {
	p := writeFile(t, "coupons.csv", "note,created_at,gid,op,order_no,coupon_code,discount_amount,user_id,template_id,branch_id\r\n"+
		"\"say \"\"hi\"\", twice\",2026-03-10T08:00:00.5+08:00,\"g,1\",LOCK,o1,C1,150,7,3,01\r\n"+
		"\"multi\nline\",2026-03-10T00:00:00Z,g2,RETURN,o2,C2,0,8,4,\r\n")
	var got []reconcile.Entry
	err := reconcile.CSVCoupons{Path: p}.ReadLedger(context.Background(), reconcile.Window{}, func(e *reconcile.Entry) error {
		c := *e
		c.OrderNo, c.CouponCode, c.GID, c.BranchID = strings.Clone(c.OrderNo), strings.Clone(c.CouponCode), strings.Clone(c.GID), strings.Clone(c.BranchID)
		got = append(got, c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []reconcile.Entry{
		{OrderNo: "o1", CouponCode: "C1", Op: reconcile.OpLock, Discount: 150, UserID: 7, TemplateID: 3, GID: "g,1", BranchID: "01",
			CreatedAt: time.Date(2026, 3, 10, 0, 0, 0, 500_000_000, time.UTC).UnixMicro()},
		{OrderNo: "o2", CouponCode: "C2", Op: reconcile.OpReturn, UserID: 8, TemplateID: 4, GID: "g2",
			CreatedAt: time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC).UnixMicro()},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %+v; want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v; want %+v", i, got[i], want[i])
		}
	}
}

// TestTimes compares the hand-written RFC 3339 decoder with time.Parse.
func TestTimes(t *testing.T) {
	for _, s := range []string{
		"2026-03-10T10:00:00Z", "2026-03-10T10:00:00.123456Z", "2026-03-10T10:00:00.1Z", "2026-03-10T10:00:00.123456789Z",
		"2024-02-29T23:59:59+08:00", "1999-12-31T23:59:59-05:30", "2100-03-01T00:00:00Z", "1969-12-31T23:59:59.999999Z",
	} {
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("time.Parse(%q): %v", s, err)
		}
		p := writeFile(t, "payments.csv", paymentsHeader+"p,o,CAPTURED,1,"+s+"\n")
		var got int64
		err = reconcile.CSVPayments{Path: p}.ReadPayments(context.Background(), reconcile.Window{}, func(x *reconcile.Payment) error { got = x.UpdatedAt; return nil })
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got != want.UnixMicro() {
			t.Errorf("%s: got %s; want %s", s, reconcile.FromMicros(got), want.UTC())
		}
	}
}
