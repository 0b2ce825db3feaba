package rules_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/opencoupon/coupon/participant/rules"
)

// foodOrder is a 64.00 CNY order: noodles (food) and a taxi ride.
var foodOrder = rules.Order{
	OrderNo:     "O-1001",
	UserID:      42,
	Amount:      6400,
	Currency:    "CNY",
	ProductLine: "food",
	Items: []rules.Item{
		{SKU: "FOOD-NOODLE", ProductLine: "food", Quantity: 2, Amount: 4400},
		{SKU: "RIDE-TAXI", ProductLine: "ride", Quantity: 1, Amount: 2000},
	},
}

// MustCompile compiles src or fails the test.
func MustCompile(tb testing.TB, src string) *rules.Rule {
	tb.Helper()
	r, err := rules.Compile(src)
	if err != nil {
		tb.Fatalf("Compile(%q): %v", src, err)
	}
	return r
}

func TestMatch(t *testing.T) {
	small := foodOrder
	small.Amount = 999
	small.Items = []rules.Item{{SKU: "SHOP-SOAP", ProductLine: "shop", Quantity: 1, Amount: 999}}
	empty := rules.Order{OrderNo: "O-0", Currency: "CNY"}

	tests := []struct {
		name  string
		rule  string
		order rules.Order
		want  bool
	}{
		{"threshold and line", `order.amount >= 5000 && order.product_line in ["food", "ride"]`, foodOrder, true},
		{"below threshold", `order.amount >= 5000 && order.product_line in ["food", "ride"]`, small, false},
		{"any item", `any(order.items, .product_line == "food")`, foodOrder, true},
		{"no such item", `any(order.items, .product_line == "food")`, small, false},
		{"any on no items", `any(order.items, .product_line == "food")`, empty, false},
		{"all on no items", `all(order.items, .amount > 0)`, empty, true},
		{"sum of map", `sum(map(order.items, .amount)) >= 5000`, foodOrder, true},
		{"sum with predicate", `sum(order.items, .amount * .quantity) == 10800`, foodOrder, true},
		{"sum of nothing", `sum(map(order.items, .amount)) == 0`, empty, true},
		{"filter and len", `len(filter(order.items, .product_line == "ride")) == 1`, foodOrder, true},
		{"count", `count(order.items, .quantity >= 2) == 1`, foodOrder, true},
		{"none", `none(order.items, .product_line == "shop")`, foodOrder, true},
		{"max of amounts", `max(map(order.items, .amount)) == 4400`, foodOrder, true},
		{"sku prefix", `all(order.items, hasPrefix(.sku, "FOOD-") || hasPrefix(.sku, "RIDE-"))`, foodOrder, true},
		{"sku in literal list", `any(order.items, .sku in ["RIDE-TAXI", "RIDE-BUS"])`, foodOrder, true},
		{"loop over literal inside predicate", `any(order.items, let sku = .sku; any(["FOOD-", "DRINK-"], hasPrefix(sku, #)))`, foodOrder, true},
		{"int64 compares with literal", `order.amount == 6400 && order.user_id == 42`, foodOrder, true},
		{"large int64", `order.user_id > 9000000000000000000`, rules.Order{UserID: math.MaxInt64}, true},
		{"integer arithmetic", `order.amount * 3 - 200 == 19000 && order.amount % 1000 == 400`, foodOrder, true},
		{"negative literal", `-order.amount < -5000`, foodOrder, true},
		{"in range", `order.amount in 5000..7000`, foodOrder, true},
		{"not in range", `order.amount not in 5000..7000`, foodOrder, false},
		{"range with negative bound", `order.amount in -100..999`, small, true},
		{"strings", `lower(order.currency) == "cny" && order.order_no startsWith "O-"`, foodOrder, true},
		{"concatenation", `order.currency + ":" + order.product_line == "CNY:food"`, foodOrder, true},
		{"regexp", `order.order_no matches "^O-[0-9]+$"`, foodOrder, true},
		{"member by string", `order["currency"] == "CNY"`, foodOrder, true},
		{"let", `let total = sum(order.items, .amount); total == order.amount`, foodOrder, true},
		{"ternary", `order.currency == "CNY" ? order.amount >= 5000 : order.amount >= 700`, foodOrder, true},
		{"optional chaining", `(find(order.items, .product_line == "shop")?.amount ?? 0) == 0`, foodOrder, true},
		{"pipe", `order.items | any(.quantity > 1)`, foodOrder, true},
		{"operands of unknown type", `first(["FOOD-"]) + "NOODLE" == order.items[0].sku && first([1]) + 1 == 2`, foodOrder, true},
		{"constant folding", `9223372036854775806 + 1 == 9223372036854775807`, empty, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := MustCompile(t, tt.rule)
			got, err := r.Match(tt.order)
			if err != nil {
				t.Fatalf("Match: %v", err)
			}
			if got != tt.want {
				t.Errorf("Match(%q) = %v, want %v", tt.rule, got, tt.want)
			}
		})
	}
}

func TestEmptyRule(t *testing.T) {
	for _, src := range []string{"", "   ", "\n\t "} {
		t.Run(fmt.Sprintf("%q", src), func(t *testing.T) {
			r := MustCompile(t, src)
			if got := r.Source(); got != src {
				t.Errorf("Source() = %q, want %q", got, src)
			}
			for _, o := range []rules.Order{{}, foodOrder} {
				got, err := r.Match(o)
				if err != nil || !got {
					t.Errorf("Match(%+v) = %v, %v; want true, nil", o, got, err)
				}
			}
		})
	}
	var zero rules.Rule
	if got, err := zero.Match(foodOrder); err != nil || !got {
		t.Errorf("zero Rule: Match = %v, %v; want true, nil", got, err)
	}
}

func TestCompileRejects(t *testing.T) {
	tests := []struct {
		name    string
		rule    string
		wantMsg string // a substring of the error message
		wantCol int    // 0: don't check
	}{
		{"unknown name", `amount >= 5000`, "unknown name amount (a rule sees order.amount", 1},
		{"unknown field", `order.total >= 5000`, "type order has no field total", 7},
		{"unknown field in arithmetic", `order.total + 1 >= 5000`, "type order has no field total", 7},
		{"unknown item field in sum", `sum(order.items, .price) >= 5000`, "type item has no field price", 19},
		{"not bool", `order.amount`, "expected bool", 0},
		{"string result", `order.currency`, "expected bool", 0},
		{"wrong types", `order.amount > "5000"`, "mismatched types", 0},
		{"syntax", `order.amount >=`, "unexpected token", 0},
		{"float literal", `order.amount >= 50.00`, "floating-point numbers are not allowed", 17},
		{"division", `order.amount / 100 >= 50`, "operator / yields a floating-point number", 14},
		{"power", `order.amount ** 2 > 0`, "floating-point", 0},
		{"constant overflow", `9223372036854775807 + 1 > 0`, "integer overflow", 21},
		{"clock", `now().Year() > 2000`, "unknown name now", 0},
		{"disabled predicate builtin", `len(groupBy(order.items, .sku)) > 1`, "groupBy is not available", 5},
		{"reduce", `reduce(order.items, #acc + .amount, 0) > 0`, "reduce is not available", 1},
		{"env", `$env.order.amount > 0`, "$env is not available", 1},
		{"bare order", `order != nil`, "order can only be used through its fields", 1},
		{"dynamic field", `order[order.currency] != nil`, "", 0},
		{"range outside in", `len(1..1000000000) > 0`, "ranges are only allowed", 6},
		{"range with computed bound", `order.amount in 0..order.user_id`, "ranges are only allowed", 18},
		{"dynamic pattern", `order.currency matches order.order_no`, "pattern of matches must be a string literal", 16},
		{"complex pattern", `order.order_no matches "(a|b)*(a{1,900})c"`, "pattern of matches is too complex", 24},
		{"bad pattern", `order.order_no matches "(a"`, "error parsing regexp", 0},
		{"nested loop over items", `any(order.items, any(order.items, .amount > 0))`, "only list literals may be used, not .items", 0},
		{"in over items inside predicate", `any(order.items, .sku in map(order.items, .sku))`, "only list literals may be used", 0},
		{"list variable inside predicate", `let xs = order.items; any(order.items, len(xs) > 1)`, "only list literals may be used, not xs", 0},
		{"deeply nested literal loops", `any([1, 2], any([1, 2], any([1, 2], # > 1)))`, "nested at most 2 deep", 0},
		{"too long", "order.amount > 0" + strings.Repeat(" ", rules.MaxSourceBytes), "bytes long; the limit is 2000", 0},
		{"too many nodes", strings.TrimSuffix(strings.Repeat("order.amount > 0 && ", 100), " && "), "exceeds maximum allowed nodes", 0},
		{"invalid utf-8", "order.currency == \"\xff\"", "not valid UTF-8", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := rules.Compile(tt.rule)
			if err == nil {
				t.Fatalf("Compile(%q) = %q, nil; want an error", tt.rule, r.Source())
			}
			var re *rules.Error
			if !errors.As(err, &re) {
				t.Fatalf("Compile(%q) error = %T %v, want *rules.Error", tt.rule, err, err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Compile(%q) error = %q, want it to contain %q", tt.rule, err, tt.wantMsg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Compile(%q) error = %q, want one line", tt.rule, err)
			}
			if tt.wantCol != 0 && (re.Line != 1 || re.Column != tt.wantCol) {
				t.Errorf("Compile(%q) error at %d:%d, want 1:%d", tt.rule, re.Line, re.Column, tt.wantCol)
			}
		})
	}
}

func TestMatchRuntimeErrors(t *testing.T) {
	huge := rules.Order{
		Amount: math.MaxInt64,
		Items:  []rules.Item{{Amount: math.MaxInt64, Quantity: 1}, {Amount: 1, Quantity: 1}},
	}
	tests := []struct {
		name    string
		rule    string
		order   rules.Order
		wantIs  error
		wantMsg string
	}{
		{"add overflows", `order.amount + 1 > 0`, huge, rules.ErrOverflow, "integer overflow (at line 1, column 14)"},
		{"sub overflows", `0 - order.amount - 2 < 0`, huge, rules.ErrOverflow, "integer overflow"},
		{"mul overflows", `order.amount * 2 > 0`, huge, rules.ErrOverflow, "integer overflow"},
		{"negate overflows", `-order.amount > 0`, rules.Order{Amount: math.MinInt64}, rules.ErrOverflow, "integer overflow"},
		{"sum overflows", `sum(map(order.items, .amount)) > 0`, huge, rules.ErrOverflow, "integer overflow"},
		{"sum with predicate overflows", `sum(order.items, .amount * .quantity) > 0`, huge, rules.ErrOverflow, "integer overflow"},
		{"sum of list overflows", `sum([order.amount, 1]) > 0`, huge, rules.ErrOverflow, "integer overflow"},
		{"index out of range", `order.items[2].amount > 0`, huge, nil, "index out of range"},
		{"nil member", `find(order.items, .amount == 7).amount > 0`, huge, nil, "cannot get amount from <nil>"},
		{"modulo by zero", `order.amount % (len(order.items) - 2) == 0`, huge, nil, "integer divide by zero"},
		{"string too long", `let s = order.order_no + order.order_no; let t = s + s; let u = t + t; len(u) > 0`,
			rules.Order{OrderNo: strings.Repeat("x", 1000)}, nil, "string longer than 4096 bytes"},
		{"memory budget", `len(map(order.items, .amount)) > 0`, rules.Order{Items: make([]rules.Item, 200_000)}, nil, "memory budget exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := MustCompile(t, tt.rule)
			got, err := r.Match(tt.order)
			if err == nil {
				t.Fatalf("Match(%q) = %v, nil; want an error", tt.rule, got)
			}
			if got {
				t.Errorf("Match(%q) = true with error, want false", tt.rule)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Match(%q) error = %v, want errors.Is %v", tt.rule, err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Match(%q) error = %q, want it to contain %q", tt.rule, err, tt.wantMsg)
			}
		})
	}
}

// TestMatchLinearCost runs the costliest kinds of rule the guard allows
// against a large order; they finish because each loops over the items once.
func TestMatchLinearCost(t *testing.T) {
	order := rules.Order{Amount: 1, Items: make([]rules.Item, 50_000)}
	for i := range order.Items {
		order.Items[i] = rules.Item{SKU: fmt.Sprint("SKU-", i), ProductLine: "food", Quantity: 1, Amount: 1}
	}
	for _, src := range []string{
		`sum(order.items, .amount) == 50000 && count(order.items, .quantity > 0) == 50000`,
		`all(order.items, let line = .product_line; any(["food", "ride", "shop"], # == line))`,
		`len(filter(map(order.items, .sku + .product_line), # endsWith "food")) == 50000`,
	} {
		t.Run(src, func(t *testing.T) {
			got, err := MustCompile(t, src).Match(order)
			if err != nil || !got {
				t.Errorf("Match = %v, %v; want true, nil", got, err)
			}
		})
	}
}

func TestMatchConcurrent(t *testing.T) {
	r := MustCompile(t, `order.amount >= 5000 && any(order.items, .product_line == "food") && sum(order.items, .amount) == order.amount`)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				amount := int64(4000 + (g*200+i)%3000) // 4000..6999
				o := rules.Order{Amount: amount, Items: []rules.Item{{ProductLine: "food", Amount: amount}}}
				want := amount >= 5000
				got, err := r.Match(o)
				if err != nil || got != want {
					t.Errorf("Match(amount %d) = %v, %v; want %v, nil", amount, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestCache(t *testing.T) {
	c := rules.NewCache(2)
	a1, err := c.Get(`order.amount > 1`)
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := c.Get(`order.amount > 1`)
	if a1 != a2 {
		t.Errorf("second Get compiled again: got %p, want %p", a2, a1)
	}
	if _, err := c.Get(`order.amount >`); err == nil {
		t.Errorf("Get of a bad rule: got nil error, want one")
	}
	if _, err := c.Get(`order.amount > 2`); err != nil {
		t.Fatal(err)
	}
	if got := c.Len(); got != 2 {
		t.Errorf("Len() = %d, want 2", got)
	}
	a3, _ := c.Get(`order.amount > 1`) // evicted by the two after it
	if a3 == a1 {
		t.Errorf("Get after eviction returned the evicted rule")
	}
	if a3.Source() != `order.amount > 1` {
		t.Errorf("Source() = %q, want %q", a3.Source(), `order.amount > 1`)
	}
	if _, err := c.Get(strings.Repeat(" ", rules.MaxSourceBytes+1)); err == nil {
		t.Errorf("Get of an over-long rule: got nil error, want one")
	}
	if got := c.Len(); got != 2 {
		t.Errorf("Len() after over-long rule = %d, want 2", got)
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := rules.NewCache(4)
	const src = `any(order.items, .product_line == "food")`
	got := make([]*rules.Rule, 16)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			r, err := c.Get(src)
			if err != nil {
				t.Error(err)
			}
			got[i] = r
		})
	}
	wg.Wait()
	for i, r := range got {
		if r != got[0] {
			t.Errorf("Get #%d = %p, want %p (compiled once)", i, r, got[0])
		}
	}
}

func FuzzCompile(f *testing.F) {
	for _, src := range []string{
		``,
		`order.amount >= 5000 && order.product_line in ["food", "ride"]`,
		`any(order.items, .product_line == "food")`,
		`sum(map(order.items, .amount)) >= 5000`,
		`sum(order.items, .amount * .quantity) > order.amount - 1`,
		`order.amount in -5..7000 and order.currency matches "^C"`,
		`let x = first(order.items)?.sku ?? ""; x + order.order_no != ""`,
		`-order.user_id * 2 < 0 || order.items[0].amount % 3 == 1`,
		`any(order.items, let sku = .sku; any(["a", "b"], # == sku))`,
		`order.amount / 2 > 1.5`,
	} {
		f.Add(src)
	}
	orders := []rules.Order{
		{},
		foodOrder,
		{Amount: math.MaxInt64, UserID: math.MinInt64, Items: []rules.Item{{Amount: math.MinInt64, Quantity: -1}}},
	}
	f.Fuzz(func(t *testing.T, src string) {
		r, err := rules.Compile(src)
		if err != nil {
			var re *rules.Error
			if !errors.As(err, &re) {
				t.Fatalf("Compile(%q) error = %T, want *rules.Error", src, err)
			}
			return
		}
		for _, o := range orders {
			if got, err := r.Match(o); err != nil && got {
				t.Fatalf("Match(%q) = true, %v; want false with an error", src, err)
			}
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	r := MustCompile(b, `order.amount >= 5000 && order.product_line in ["food", "ride"] && any(order.items, .product_line == "food")`)
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := r.Match(foodOrder); !ok || err != nil {
			b.Fatalf("Match = %v, %v", ok, err)
		}
	}
}
