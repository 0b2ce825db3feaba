package rules

import (
	"fmt"
	"math"
	"reflect"
	"regexp/syntax"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
)

// builtins are the expr builtins a rule may call. The rest are left out for
// determinism (now, date, ...), cost (repeat, sortBy, groupBy, ...) or because
// they bring in floats (float, round, mean, ...). reduce is not callable from
// rules (its accumulator is untyped) but is what sum is rewritten into.
var builtins = []string{
	"all", "none", "any", "one", "filter", "map", "count", "sum",
	"find", "findIndex", "findLast", "findLastIndex",
	"len", "first", "last", "max", "min",
	"lower", "upper", "trim", "trimPrefix", "trimSuffix",
	"hasPrefix", "hasSuffix", "indexOf", "lastIndexOf",
}

var allowed = func() map[string]bool {
	m := make(map[string]bool, len(builtins))
	for _, name := range builtins {
		m[name] = true
	}
	return m
}()

// Names of the overflow-checked integer operators. A "$" keeps them out of
// the way of rule authors; calling them directly is harmless.
const (
	fnAdd    = "$add"
	fnSub    = "$sub"
	fnMul    = "$mul"
	fnConcat = "$concat"
	fnPlus   = "$plus" // + with an operand of unknown type
)

// maxRegexpInsts bounds the size of a compiled matches pattern; it is also
// the size up to which Go's regexp uses its fast backtracker.
const maxRegexpInsts = 500

// maxStringBytes bounds strings built by +, which could otherwise double in
// size with every let.
const maxStringBytes = 4096

var helperNames = map[string]bool{fnAdd: true, fnSub: true, fnMul: true, fnConcat: true, fnPlus: true}

var exprOptions = func() []expr.Option {
	opts := []expr.Option{expr.DisableAllBuiltins()}
	for _, name := range builtins {
		opts = append(opts, expr.EnableBuiltin(name))
	}
	sig := new(func(int, int) int)
	return append(opts,
		expr.Function(fnAdd, checked(addInt), sig),
		expr.Function(fnSub, checked(subInt), sig),
		expr.Function(fnMul, checked(mulInt), sig),
		expr.Function(fnConcat, plus, new(func(string, string) string)),
		expr.Function(fnPlus, plus, new(func(any, any) any)),
	)
}()

var (
	intType    = reflect.TypeFor[int]()
	stringType = reflect.TypeFor[string]()
	addChecked = checked(addInt)
)

func plus(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("want 2 operands, got %d", len(args))
	}
	a, okA := args[0].(string)
	b, okB := args[1].(string)
	if !okA || !okB {
		return addChecked(args...)
	}
	if len(a)+len(b) > maxStringBytes {
		return nil, fmt.Errorf("string longer than %d bytes", maxStringBytes)
	}
	return a + b, nil
}

func checked(op func(a, b int64) (int64, bool)) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if len(args) != 2 {
			return nil, fmt.Errorf("want 2 operands, got %d", len(args))
		}
		a, okA := toInt64(args[0])
		b, okB := toInt64(args[1])
		if !okA || !okB {
			return nil, fmt.Errorf("invalid operation on %T and %T: integers expected", args[0], args[1])
		}
		r, ok := op(a, b)
		if !ok {
			return nil, ErrOverflow
		}
		return int(r), nil
	}
}

func toInt64(v any) (int64, bool) {
	switch v := v.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case int32:
		return int64(v), true
	case int16:
		return int64(v), true
	case int8:
		return int64(v), true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint:
		return int64(v), v <= math.MaxInt64
	case uint64:
		return int64(v), v <= math.MaxInt64
	}
	return 0, false
}

func addInt(a, b int64) (int64, bool) {
	s := a + b
	return s, (s > a) == (b > 0)
}

func subInt(a, b int64) (int64, bool) {
	d := a - b
	return d, (d < a) == (b > 0)
}

func mulInt(a, b int64) (int64, bool) {
	if a == 0 || b == 0 {
		return 0, true
	}
	p := a * b
	if (a == -1 && b == math.MinInt64) || (b == -1 && a == math.MinInt64) || p/b != a {
		return 0, false
	}
	return p, true
}

// guard is an expr patch run on the type-checked tree before it is optimized
// and compiled. It records the first rule it finds broken and rewrites integer
// arithmetic to the checked functions. A guard serves one Compile call.
type guard struct {
	err *file.Error
	// pending holds nodes that are only allowed as part of a parent (a..b
	// under `in`, the bare order under a member access); a parent visited
	// later removes them, and whatever remains at the end is an error.
	pending map[ast.Node]string
	// depth is the nesting depth of each predicate visited so far, itself
	// counting as 1.
	depth map[*ast.PredicateNode]int
	// types holds the result types of the calls the guard creates. They are
	// not set on the nodes: expr's checker takes a typed call as checked and
	// would skip its arguments.
	types map[ast.Node]reflect.Type
}

func (g *guard) typeOf(n ast.Node) reflect.Type {
	if t, ok := g.types[n]; ok {
		return t
	}
	return n.Type()
}

// call returns a call of the named helper whose result has type t (nil if
// unknown).
func (g *guard) call(name string, t reflect.Type, args ...ast.Node) ast.Node {
	c := &ast.CallNode{Callee: &ast.IdentifierNode{Value: name}, Arguments: args}
	g.setType(c, t)
	return c
}

func (g *guard) setType(n ast.Node, t reflect.Type) {
	if t == nil {
		return
	}
	if g.types == nil {
		g.types = make(map[ast.Node]reflect.Type)
	}
	g.types[n] = t
}

// maxPredicateDepth allows a loop over a list literal inside a loop over the
// order's items, and no deeper.
const maxPredicateDepth = 2

func (g *guard) result() error {
	if g.err != nil {
		return g.err
	}
	var first ast.Node
	for n := range g.pending {
		if first == nil || n.Location().From < first.Location().From {
			first = n
		}
	}
	if first != nil {
		return &file.Error{Location: first.Location(), Message: g.pending[first]}
	}
	return nil
}

func (g *guard) fail(n ast.Node, format string, args ...any) {
	if g.err == nil {
		g.err = &file.Error{Location: n.Location(), Message: fmt.Sprintf(format, args...)}
	}
}

func (g *guard) require(n ast.Node, msg string) {
	if g.pending == nil {
		g.pending = make(map[ast.Node]string)
	}
	g.pending[n] = msg
}

// Visit is called by ast.Walk children first, so a node's operands have
// already been checked and rewritten when it is visited.
func (g *guard) Visit(node *ast.Node) {
	if g.err != nil {
		return
	}
	if isFloat((*node).Type()) {
		g.rejectFloat(*node)
		return
	}
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		switch n.Value {
		case "$env":
			g.fail(n, "$env is not available; use order.amount, order.items, ...")
		case "order":
			g.require(n, "order can only be used through its fields, e.g. order.amount")
		}
	case *ast.MemberNode:
		if id, ok := n.Node.(*ast.IdentifierNode); ok && id.Value == "order" {
			if _, ok := n.Property.(*ast.StringNode); ok {
				delete(g.pending, id)
			}
		}
	case *ast.UnaryNode:
		if t := g.typeOf(n.Node); n.Operator == "-" && (isInt(t) || isUnknown(t)) {
			g.negate(node, n)
		}
	case *ast.BinaryNode:
		g.binary(node, n)
	case *ast.BuiltinNode:
		// expr's parser lets predicate builtins (reduce, groupBy, sortBy)
		// through even when disabled.
		if !allowed[n.Name] {
			g.fail(n, "%s is not available in rules", n.Name)
			return
		}
		if n.Name == "sum" {
			g.sum(node, n)
		}
	case *ast.PredicateNode:
		g.predicate(n)
	}
}

func (g *guard) rejectFloat(n ast.Node) {
	switch n := n.(type) {
	case *ast.FloatNode:
		g.fail(n, "floating-point numbers are not allowed; amounts are integer minor units (5000, not 50.00)")
	case *ast.BinaryNode:
		g.fail(n, "operator %s yields a floating-point number, which is not allowed; amounts are integer minor units (use order.amount >= 50 * 100, not order.amount / 100 >= 50)", n.Operator)
	default:
		g.fail(n, "floating-point numbers are not allowed; amounts are integer minor units")
	}
}

func (g *guard) negate(node *ast.Node, n *ast.UnaryNode) {
	if lit, ok := n.Node.(*ast.IntegerNode); ok {
		if lit.Value == math.MinInt {
			g.fail(n, "%v", ErrOverflow)
			return
		}
		ast.Patch(node, integer(-lit.Value))
		return
	}
	ast.Patch(node, g.call(fnSub, intType, integer(0), n.Node))
}

func (g *guard) binary(node *ast.Node, n *ast.BinaryNode) {
	switch n.Operator {
	case "+", "-", "*":
		g.arithmetic(node, n)
	case "..":
		g.require(n, "ranges are only allowed as `x in 1000..5000`, with integer literal bounds")
	case "in":
		r, ok := n.Right.(*ast.BinaryNode)
		if !ok || r.Operator != ".." {
			return
		}
		lo, okLo := r.Left.(*ast.IntegerNode)
		hi, okHi := r.Right.(*ast.IntegerNode)
		if t := g.typeOf(n.Left); !okLo || !okHi || !isInt(t) && !isUnknown(t) {
			return // r stays pending and is reported
		}
		delete(g.pending, r)
		// expr would build the whole range as a list; compare instead.
		and := &ast.BinaryNode{Operator: "and",
			Left:  &ast.BinaryNode{Operator: ">=", Left: n.Left, Right: lo},
			Right: &ast.BinaryNode{Operator: "<=", Left: n.Left, Right: hi},
		}
		for _, b := range []*ast.BinaryNode{and, and.Left.(*ast.BinaryNode), and.Right.(*ast.BinaryNode)} {
			b.SetType(reflect.TypeFor[bool]())
			b.SetLocation(n.Location())
		}
		ast.Patch(node, and)
	case "matches":
		pattern, ok := n.Right.(*ast.StringNode)
		if !ok {
			g.fail(n, "the pattern of matches must be a string literal")
			return
		}
		// Matching costs up to one step per instruction per input byte.
		re, err := syntax.Parse(pattern.Value, syntax.Perl)
		if err != nil {
			return // expr reports it
		}
		prog, err := syntax.Compile(re.Simplify())
		if err == nil && len(prog.Inst) > maxRegexpInsts {
			g.fail(n.Right, "the pattern of matches is too complex (%d instructions; the limit is %d)", len(prog.Inst), maxRegexpInsts)
		}
	}
}

// arithmetic rewrites +, - and * on integers into overflow-checked calls
// and + on strings into a length-checked one, folding literals. An operand of
// unknown type (any) goes to a call that checks its type at run time.
func (g *guard) arithmetic(node *ast.Node, n *ast.BinaryNode) {
	lt, rt := g.typeOf(n.Left), g.typeOf(n.Right)
	switch {
	case n.Operator == "+" && isString(lt) && isString(rt):
		l, okL := n.Left.(*ast.StringNode)
		r, okR := n.Right.(*ast.StringNode)
		if okL && okR {
			ast.Patch(node, typed(&ast.StringNode{Value: l.Value + r.Value}, stringType))
			return
		}
		ast.Patch(node, g.call(fnConcat, stringType, n.Left, n.Right))
	case n.Operator == "+" && (isUnknown(lt) && !isInt(rt) || isUnknown(rt) && !isInt(lt)):
		ast.Patch(node, g.call(fnPlus, nil, n.Left, n.Right))
	case (isInt(lt) || isUnknown(lt)) && (isInt(rt) || isUnknown(rt)):
		op, fn := addInt, fnAdd
		switch n.Operator {
		case "-":
			op, fn = subInt, fnSub
		case "*":
			op, fn = mulInt, fnMul
		}
		l, okL := n.Left.(*ast.IntegerNode)
		r, okR := n.Right.(*ast.IntegerNode)
		if okL && okR {
			v, ok := op(int64(l.Value), int64(r.Value))
			if !ok {
				g.fail(n, "%v", ErrOverflow)
				return
			}
			ast.Patch(node, integer(int(v)))
			return
		}
		ast.Patch(node, g.call(fn, intType, n.Left, n.Right))
	}
}

// sum becomes reduce over a checked addition; sum(map(xs, f)) is fused into
// one loop as expr's optimizer would have done. A sum of non-integers is left
// for expr to reject.
func (g *guard) sum(node *ast.Node, n *ast.BuiltinNode) {
	if len(n.Arguments) == 0 || len(n.Arguments) > 2 {
		return
	}
	coll := n.Arguments[0]
	var elem ast.Node = &ast.PointerNode{}
	var elemType reflect.Type
	if t := g.typeOf(coll); t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		elemType = t.Elem()
	}
	depth := 1
	if len(n.Arguments) == 2 {
		p, ok := n.Arguments[1].(*ast.PredicateNode)
		if !ok {
			return
		}
		elem, elemType, depth = p.Node, g.typeOf(p.Node), g.depth[p]
	} else if m, ok := coll.(*ast.BuiltinNode); ok && m.Name == "map" && len(m.Arguments) == 2 {
		if p, ok := m.Arguments[1].(*ast.PredicateNode); ok {
			coll, elem, elemType, depth = m.Arguments[0], p.Node, g.typeOf(p.Node), g.depth[p]
		}
	}
	if !isInt(elemType) && !isUnknown(elemType) {
		return
	}
	acc := &ast.PointerNode{Name: "acc"}
	acc.SetLocation(n.Location())
	add := g.call(fnAdd, intType, acc, elem)
	add.SetLocation(n.Location())
	pred := &ast.PredicateNode{Node: add}
	pred.SetLocation(n.Location())
	g.setDepth(pred, depth)
	ast.Patch(node, &ast.BuiltinNode{Name: "reduce", Arguments: []ast.Node{coll, pred, integer(0)}})
	g.setType(*node, intType)
}

// predicate keeps a rule's cost linear in the order's size: a loop over a
// list inside a predicate would make it quadratic, as would in or == over
// one, so no list but a literal may appear there. Values of unknown type
// might be lists, so they are not allowed either. Loops over literals are
// bounded by MaxNodes, but nested deeply they multiply, hence
// maxPredicateDepth.
func (g *guard) predicate(p *ast.PredicateNode) {
	depth := 1
	bad := ast.Find(p.Node, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ArrayNode, *ast.NilNode:
			return false
		case *ast.PredicateNode:
			depth = max(depth, g.depth[n]+1)
			return false
		case *ast.PointerNode:
			if n.Name == "acc" {
				return false // the accumulator of a rewritten sum, an int
			}
		case *ast.IdentifierNode:
			if helperNames[n.Value] {
				return false
			}
		}
		t := g.typeOf(n)
		return isUnknown(t) || t.Kind() == reflect.Slice || t.Kind() == reflect.Array
	})
	if bad != nil {
		g.fail(bad, "inside a predicate (the second argument of any, all, filter, map, sum, ...) only list literals may be used, not %s; this keeps a rule's cost linear in the number of items", g.describe(bad))
		return
	}
	if depth > maxPredicateDepth {
		g.fail(p, "predicates may be nested at most %d deep", maxPredicateDepth)
		return
	}
	g.setDepth(p, depth)
}

func (g *guard) setDepth(p *ast.PredicateNode, depth int) {
	if g.depth == nil {
		g.depth = make(map[*ast.PredicateNode]int)
	}
	g.depth[p] = depth
}

func (g *guard) describe(n ast.Node) string {
	switch n := n.(type) {
	case *ast.MemberNode:
		if s, ok := n.Property.(*ast.StringNode); ok {
			return "." + s.Value
		}
	case *ast.IdentifierNode:
		return n.Value
	case *ast.BuiltinNode:
		return n.Name + "(...)"
	}
	if t := g.typeOf(n); !isUnknown(t) {
		return "a value of type " + t.String()
	}
	return "a value of unknown type"
}

func integer(v int) ast.Node {
	return typed(&ast.IntegerNode{Value: v}, intType)
}

func typed(n ast.Node, t reflect.Type) ast.Node {
	n.SetType(t)
	return n
}

func isString(t reflect.Type) bool {
	return t != nil && t.Kind() == reflect.String
}

func isInt(t reflect.Type) bool {
	if t == nil {
		return false
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func isFloat(t reflect.Type) bool {
	return t != nil && (t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64)
}

func isUnknown(t reflect.Type) bool {
	return t == nil || t.Kind() == reflect.Interface
}
