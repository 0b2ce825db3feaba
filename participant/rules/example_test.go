package rules_test

import (
	"fmt"

	"github.com/opencoupon/coupon/participant/rules"
)

func ExampleCompile() {
	rule, err := rules.Compile(`order.amount >= 5000 && any(order.items, .product_line in ["food", "ride"])`)
	if err != nil {
		fmt.Println(err)
		return
	}
	order := rules.Order{
		OrderNo:  "O-1001",
		Amount:   6400, // 64.00 in minor units
		Currency: "CNY",
		Items:    []rules.Item{{SKU: "noodles", ProductLine: "food", Quantity: 2, Amount: 6400}},
	}
	fmt.Println(rule.Match(order))

	// Amounts are integer minor units, so float arithmetic is refused.
	_, err = rules.Compile(`order.amount / 100 >= 50`)
	fmt.Println(err)
	// Output:
	// true <nil>
	// invalid rule at line 1, column 14: operator / yields a floating-point number, which is not allowed; amounts are integer minor units (use order.amount >= 50 * 100, not order.amount / 100 >= 50)
}
