// Package rules evaluates coupon template usage rules: boolean expressions over
// an order, such as `order.amount >= 5000 && order.product_line in ["food", "ride"]`,
// compiled once per template version and checked when the template is created.
//
// Rules are written in the expr language (github.com/expr-lang/expr) with a
// restricted set of builtins and three extra guarantees the service relies on:
//
//   - Money stays integer. Amounts are int64 minor units; floating-point
//     literals and operators that yield floats (/, **) are rejected at compile
//     time, and +, - and * on integers (and sum) fail with ErrOverflow instead
//     of wrapping around.
//   - Cost is bounded. Sources are at most MaxSourceBytes long and MaxNodes
//     nodes big. Inside a predicate (the second argument of any, all, filter,
//     map, sum, ...) no list but a literal may appear and predicates nest at
//     most two deep, so a rule's cost is linear in the order's size. Ranges
//     are only allowed as `x in 1000..5000`, strings built with + are capped,
//     and matches takes a small literal pattern.
//   - Evaluation is deterministic: builtins that read the clock or parse data
//     (now, date, fromJSON, ...) are not available.
package rules

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// Expressions compute with expr's int; refuse to build where it is narrower
// than the int64 amounts it has to hold.
const _ uint = math.MaxInt - math.MaxInt64

const (
	// MaxSourceBytes is the longest rule source Compile accepts.
	MaxSourceBytes = 2000
	// MaxNodes bounds the size of a rule's syntax tree, and with it the work
	// done per order item.
	MaxNodes = 500
	// memoryBudget bounds the list elements a single evaluation may allocate
	// (expr counts elements, not bytes).
	memoryBudget = 100_000
)

// ErrOverflow is wrapped by the error Match returns when integer arithmetic
// in a rule overflows int64.
var ErrOverflow = errors.New("integer overflow")

// Item is one line of an order.
type Item struct {
	SKU         string `expr:"sku"`
	ProductLine string `expr:"product_line"`
	Quantity    int64  `expr:"quantity"`
	Amount      int64  `expr:"amount"` // minor units
}

// Order is what a rule sees, as `order` with snake_case field names.
type Order struct {
	OrderNo     string `expr:"order_no"`
	UserID      int64  `expr:"user_id"`
	Amount      int64  `expr:"amount"` // minor units
	Currency    string `expr:"currency"`
	ProductLine string `expr:"product_line"`
	Items       []Item `expr:"items"`
}

// env is the root of the expression environment.
type env struct {
	Order Order `expr:"order"`
}

// Error explains why Compile rejected a rule. Its message is written for the
// template author.
type Error struct {
	Message string // what is wrong, e.g. "unknown name amount"
	// Line and Column locate the problem in the source, counting from 1;
	// both are 0 when the rule as a whole is at fault.
	Line, Column int
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return "invalid rule: " + e.Message
	}
	return fmt.Sprintf("invalid rule at line %d, column %d: %s", e.Line, e.Column, e.Message)
}

// Rule is a compiled usage rule. It is immutable and safe for concurrent use.
// The zero Rule, like the empty source, matches every order.
type Rule struct {
	src     string
	program *vm.Program // nil for the empty rule
}

// Compile parses and type-checks src. The empty (or all-space) rule is valid
// and matches every order. Any error is an *Error.
func Compile(src string) (_ *Rule, err error) {
	if len(src) > MaxSourceBytes {
		return nil, &Error{Message: fmt.Sprintf("rule is %d bytes long; the limit is %d", len(src), MaxSourceBytes)}
	}
	if !utf8.ValidString(src) {
		return nil, &Error{Message: "rule is not valid UTF-8"}
	}
	if strings.TrimSpace(src) == "" {
		return &Rule{src: src}, nil
	}
	// expr and the guard walk a tree built from untrusted input; a panic in
	// either must reject the rule, not take the server down.
	defer func() {
		if r := recover(); r != nil {
			err = &Error{Message: fmt.Sprintf("cannot compile rule: %v", r)}
		}
	}()

	opts := append([]expr.Option{
		expr.Env(env{}),
		expr.AsBool(),
		expr.MaxNodes(MaxNodes),
	}, exprOptions...)
	// Check the rule as written first. Once a patch has run, expr's checker
	// takes calls as checked and skips their arguments, so errors there would
	// go unreported.
	if _, err := expr.Compile(src, opts...); err != nil {
		return nil, compileError(src, err)
	}
	g := &guard{}
	program, err := expr.Compile(src, append(opts, expr.Patch(g))...)
	if err == nil {
		err = g.result()
	}
	if err != nil {
		return nil, compileError(src, err)
	}
	return &Rule{src: src, program: program}, nil
}

// Source returns the rule's source text as given to Compile.
func (r *Rule) Source() string { return r.src }

// machine is a reusable evaluation state; a vm.VM is not safe for concurrent
// use, so each Match borrows one.
type machine struct {
	vm  vm.VM
	env env
}

var machines = sync.Pool{New: func() any { return new(machine) }}

// Match reports whether the order satisfies the rule. A rule that fails at
// run time (an index out of range, a division by zero, ErrOverflow) does not
// match, and the error says why.
func (r *Rule) Match(o Order) (bool, error) {
	if r.program == nil {
		return true, nil
	}
	m := machines.Get().(*machine)
	m.env.Order = o
	m.vm.MemoryBudget = memoryBudget
	out, err := m.vm.Run(r.program, &m.env)
	m.env = env{} // don't keep the caller's items alive in the pool
	machines.Put(m)
	if err != nil {
		return false, fmt.Errorf("evaluate rule: %w", runtimeError(err))
	}
	ok, isBool := out.(bool)
	if !isBool {
		return false, fmt.Errorf("evaluate rule: result is %T, not bool", out)
	}
	return ok, nil
}

// compileError turns an expr error into an *Error with a one-line message
// and a 1-based position.
func compileError(src string, err error) *Error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return &Error{Message: err.Error()}
	}
	if fe.Line == 0 {
		fe = fe.Bind(file.NewSource(src))
	}
	e := &Error{Message: goTypes.Replace(strings.TrimSpace(fe.Message)), Line: fe.Line, Column: fe.Column + 1}
	if strings.HasPrefix(e.Message, "unknown name ") {
		e.Message += " (a rule sees order.amount, order.currency, order.product_line, order.user_id, order.order_no and order.items)"
	}
	return e
}

// goTypes names the environment's types as rule authors know them.
var goTypes = strings.NewReplacer("rules.Order", "order", "rules.Item", "item")

// runtimeError drops the multi-line source snippet expr appends to run-time
// errors, keeping the error chain (for errors.Is(err, ErrOverflow)).
func runtimeError(err error) error {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return err
	}
	msg := fmt.Sprintf("%s (at line %d, column %d)", fe.Message, fe.Line, fe.Column+1)
	if fe.Prev != nil {
		return &wrapped{msg: msg, err: fe.Prev}
	}
	return errors.New(msg)
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }
