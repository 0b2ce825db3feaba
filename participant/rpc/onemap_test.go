package rpc_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// statusBuilders are the functions of google.golang.org/grpc/status that
// make a status; reading one (FromError, Convert, Code) is fine anywhere.
var statusBuilders = []string{"New", "Newf", "Error", "Errorf", "ErrorProto", "FromProto"}

// ownMaps are the files outside the map that may build statuses, each for
// a program that is not the coupon service and keeps its own map.
var ownMaps = map[string]string{
	"participant/rpc/errors.go": "the one map of the coupon service",
	// DTM's own binary: its guard answers DTM's calls with DTM's codes
	// and shares nothing with the service but the module.
	"coordinator/": "the coordinator wrapping DTM",
	// The sample shop is another service; this file is its one map.
	"examples/shop/errors.go": "the sample shop's own map",
	// The benchmark's baseline is the textbook TCC service, written as
	// the textbook writes it, to be compared with ours.
	"internal/bench/tccbench/textbook.go": "the textbook baseline of the TCC benchmark",
}

// TestStatusesBuiltInOnePlace fails when code of the module other than the
// error map (participant/rpc/errors.go) builds a gRPC status: every other
// interceptor and handler returns a domain error (*participant.Error) and
// rpc.UnaryErrors maps it, once. Generated code is skipped.
func TestStatusesBuiltInOnePlace(t *testing.T) {
	root := moduleRoot(t)
	used := map[string]bool{}
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(path, root+string(filepath.Separator)))
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		for allowed := range ownMaps {
			if rel == allowed || strings.HasSuffix(allowed, "/") && strings.HasPrefix(rel, allowed) {
				used[allowed] = true
				return nil
			}
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		for _, pos := range statusBuilt(f) {
			p := fset.Position(pos)
			found = append(found, rel+":"+strconv.Itoa(p.Line))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Errorf("gRPC statuses built outside participant/rpc/errors.go; return a *participant.Error and let rpc.UnaryErrors map it (add a code to participant/errors.go and the map if one is missing):\n\t%s",
			strings.Join(found, "\n\t"))
	}
	for allowed, why := range ownMaps {
		if !used[allowed] {
			t.Errorf("ownMaps lists %s (%s), which holds no Go file any more: remove or move the entry", allowed, why)
		}
	}
}

// statusBuilt returns where f builds a status: a call of a builder of the
// status package, under whatever name f imports it, or of a WithDetails
// method (only *status.Status has one in this module).
func statusBuilt(f *ast.File) []token.Pos {
	name := ""
	for _, im := range f.Imports {
		if p, _ := strconv.Unquote(im.Path.Value); p == "google.golang.org/grpc/status" {
			name = "status"
			if im.Name != nil {
				name = im.Name.Name
			}
		}
	}
	var at []token.Pos
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		if sel.Sel.Name == "WithDetails" {
			at = append(at, call.Pos())
		} else if x, ok := sel.X.(*ast.Ident); ok && name != "" && x.Name == name && slices.Contains(statusBuilders, sel.Sel.Name) {
			at = append(at, call.Pos())
		}
		return true
	})
	return at
}

// moduleRoot is the directory of the go.mod above the test's.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
