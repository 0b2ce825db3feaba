package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/opencoupon/coupon/participant"
	"github.com/opencoupon/coupon/participant/rpc"
)

// Reasons of the refusals the gateway makes before a request reaches the
// service (ErrorInfo domain "coupon"). Nothing has been executed for any
// of them.
const (
	ReasonTrailingData     = "TRAILING_DATA"      // 400: more after the JSON body
	ReasonUnknownParameter = "UNKNOWN_PARAMETER"  // 400: metadata "parameter" names it
	ReasonInvalidUTF8      = "INVALID_UTF8"       // 400: metadata "in" is path, query, header or body
	ReasonMalformedQuery   = "MALFORMED_QUERY"    // 400: the query string does not parse
	ReasonHeadersTooLarge  = "HEADERS_TOO_LARGE"  // 431
	ReasonMethodNotAllowed = "METHOD_NOT_ALLOWED" // 405, with Allow
	ReasonBodyTooLarge     = "BODY_TOO_LARGE"     // 413
)

// maxHeaderBytes bounds a request's headers on the API. The listener's own
// limit (http.Server.MaxHeaderBytes) is larger and answers in plain text;
// this one answers in the API's shape, and stays under what the gRPC hop
// carries as metadata.
const maxHeaderBytes = 16 << 10

// route is one HTTP binding of an RPC, read from its google.api.http
// option: the gateway knows from it which methods a path has, which query
// parameters a method takes and whether it has a JSON body.
type route struct {
	method string
	segs   []string // path segments; "" is a {variable}
	verb   string   // the custom method after ':' ("approve"), if any
	input  protoreflect.MessageDescriptor
	body   bool            // body: "*"
	vars   map[string]bool // fields bound from the path
}

// routesOf reads the HTTP bindings of every service in files.
func routesOf(files ...protoreflect.FileDescriptor) ([]route, error) {
	var rs []route
	for _, f := range files {
		for i := range f.Services().Len() {
			ms := f.Services().Get(i).Methods()
			for j := range ms.Len() {
				m := ms.Get(j)
				rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
				if rule == nil {
					continue
				}
				for _, b := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
					r, err := bindingRoute(m.Input(), b)
					if err != nil {
						return nil, fmt.Errorf("http binding of %s: %w", m.FullName(), err)
					}
					rs = append(rs, r)
				}
			}
		}
	}
	return rs, nil
}

func bindingRoute(in protoreflect.MessageDescriptor, b *annotations.HttpRule) (route, error) {
	var method, path string
	switch p := b.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		method, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		method, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Patch:
		method, path = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Delete:
		method, path = http.MethodDelete, p.Delete
	default:
		return route{}, fmt.Errorf("unsupported pattern %v", p)
	}
	if b.GetBody() != "" && b.GetBody() != "*" {
		return route{}, fmt.Errorf("body %q: only \"*\" is supported", b.GetBody())
	}
	r := route{method: method, input: in, body: b.GetBody() == "*", vars: map[string]bool{}}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	last := segs[len(segs)-1]
	if i := strings.LastIndex(last, ":"); i >= 0 && i > strings.LastIndex(last, "}") {
		r.verb, segs[len(segs)-1] = last[i+1:], last[:i]
	}
	for _, s := range segs {
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			name, _, _ := strings.Cut(strings.Trim(s, "{}"), "=")
			r.vars[name] = true
			s = ""
		}
		r.segs = append(r.segs, s)
	}
	return r, nil
}

// matches reports whether the escaped request path is r's path.
func (r route) matches(segs []string, verb string) bool {
	if len(segs) != len(r.segs) || verb != r.verb {
		return false
	}
	for i, s := range r.segs {
		if s == "" {
			if segs[i] == "" {
				return false
			}
			continue
		}
		if v, err := url.PathUnescape(segs[i]); err != nil || v != s {
			return false
		}
	}
	return true
}

// lookup returns the routes of the request's path, and the one of its
// method among them (nil when the path has routes but not for the method).
func lookup(rs []route, req *http.Request) (matched []route, own *route) {
	segs := strings.Split(strings.TrimPrefix(req.URL.EscapedPath(), "/"), "/")
	try := func(segs []string, verb string) {
		for _, r := range rs {
			if r.matches(segs, verb) {
				matched = append(matched, r)
			}
		}
	}
	// A custom method (":lock") wins over a variable that would take the
	// colon in: no id or code has one.
	last := segs[len(segs)-1]
	if i := strings.LastIndex(last, ":"); i > 0 {
		withVerb := append(slices.Clone(segs[:len(segs)-1]), last[:i])
		try(withVerb, last[i+1:])
	}
	if len(matched) == 0 {
		try(segs, "")
	}
	for i := range matched {
		if matched[i].method == req.Method {
			return matched, &matched[i]
		}
	}
	return matched, nil
}

// queryField reports whether key names a field of r's request that the
// query may set: grpc-gateway's rules (proto or JSON names, dotted through
// singular messages, "field[key]" for a map), minus the fields bound from
// the path, and none at all for a method with a JSON body, whose
// generated handler reads no query.
func (r route) queryField(key string) bool {
	if r.body {
		return false
	}
	if i := strings.Index(key, "["); i > 0 && strings.HasSuffix(key, "]") {
		key = key[:i]
	}
	md := r.input
	parts := strings.Split(key, ".")
	for i, p := range parts {
		fs := md.Fields()
		fd := fs.ByTextName(p)
		if fd == nil {
			fd = fs.ByJSONName(p)
		}
		if fd == nil {
			return false
		}
		if i == 0 && r.vars[string(fd.Name())] {
			return false
		}
		if i == len(parts)-1 {
			return true
		}
		if fd.Message() == nil || fd.Cardinality() == protoreflect.Repeated {
			return false
		}
		md = fd.Message()
	}
	return false
}

// refusal is a request the gateway answers itself: a domain error, mapped
// to its status by rpc.Status as the service's own are, with the HTTP
// status that the gateway's default (from the gRPC code) would not give.
type refusal struct {
	http   int
	code   participant.Code
	reason string
	meta   map[string]string
	msg    string
}

// strict refuses, before anything is executed, what the API does not
// take: headers over maxHeaderBytes (431), invalid UTF-8 anywhere (400), a
// method a known path does not have (405 with Allow), a query parameter
// the method does not take (400 naming it), a body over maxBody (413) and
// data after the JSON body (400). grpc-gateway would ignore an unknown
// parameter and decode only the first JSON value of a body, executing a
// request other than the one sent.
func strict(rs []route, mux *runtime.ServeMux, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ref := check(rs, r); ref != nil {
			refuse(mux, log, w, r, ref)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func check(rs []route, r *http.Request) *refusal {
	size := len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			size += len(k) + len(v) + 4
		}
	}
	if size > maxHeaderBytes {
		return &refusal{http: http.StatusRequestHeaderFieldsTooLarge, code: participant.ETOOLARGE, reason: ReasonHeadersTooLarge,
			msg: fmt.Sprintf("request headers are larger than %d bytes", maxHeaderBytes)}
	}
	badUTF8 := func(in string) *refusal {
		return &refusal{http: http.StatusBadRequest, code: participant.EINVALID, reason: ReasonInvalidUTF8,
			meta: map[string]string{"in": in}, msg: "the request's " + in + " is not valid UTF-8"}
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return badUTF8("header")
			}
		}
	}
	if !utf8.ValidString(r.URL.Path) {
		return badUTF8("path")
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return &refusal{http: http.StatusBadRequest, code: participant.EINVALID, reason: ReasonMalformedQuery, msg: "malformed query: " + err.Error()}
	}
	for k, vs := range query {
		if !utf8.ValidString(k) || slices.ContainsFunc(vs, func(v string) bool { return !utf8.ValidString(v) }) {
			return badUTF8("query")
		}
	}
	matched, own := lookup(rs, r)
	if len(matched) > 0 && own == nil {
		var allow []string
		for _, m := range matched {
			if !slices.Contains(allow, m.method) {
				allow = append(allow, m.method)
			}
		}
		return &refusal{http: http.StatusMethodNotAllowed, code: participant.EUNIMPLEMENTED, reason: ReasonMethodNotAllowed,
			meta: map[string]string{"allow": strings.Join(allow, ", ")},
			msg:  fmt.Sprintf("%s is not a method of %s; it has %s", r.Method, r.URL.Path, strings.Join(allow, ", "))}
	}
	if own != nil {
		keys := make([]string, 0, len(query))
		for k := range query {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if !own.queryField(k) {
				return &refusal{http: http.StatusBadRequest, code: participant.EINVALID, reason: ReasonUnknownParameter,
					meta: map[string]string{"parameter": k}, msg: fmt.Sprintf("unknown query parameter %q", k)}
			}
		}
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	tooLarge := &refusal{http: http.StatusRequestEntityTooLarge, code: participant.ETOOLARGE, reason: ReasonBodyTooLarge,
		msg: fmt.Sprintf("request body is larger than %d bytes", maxBody)}
	if r.ContentLength > maxBody {
		return tooLarge
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return &refusal{http: http.StatusBadRequest, code: participant.EINVALID, reason: "INVALID_ARGUMENT", msg: "read request body: " + err.Error()}
	}
	if len(body) > maxBody {
		return tooLarge
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if !utf8.Valid(body) {
		return badUTF8("body")
	}
	if own != nil && own.body && trailingData(body) {
		return &refusal{http: http.StatusBadRequest, code: participant.EINVALID, reason: ReasonTrailingData,
			msg: "the request body has data after its JSON value"}
	}
	return nil
}

// trailingData reports whether body is a JSON value followed by anything
// but white space. A body that is not JSON at all is left to the decoder,
// which refuses it.
func trailingData(body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return false
	}
	return len(bytes.TrimSpace(body[dec.InputOffset():])) > 0
}

func refuse(mux *runtime.ServeMux, log *slog.Logger, w http.ResponseWriter, r *http.Request, ref *refusal) {
	ctx := context.WithoutCancel(r.Context())
	err := rpc.Status(ctx, log, &participant.Error{Code: ref.code, Reason: ref.reason, Message: ref.msg, Metadata: ref.meta})
	if ref.http == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", ref.meta["allow"])
	}
	if ref.http == http.StatusRequestEntityTooLarge || ref.http == http.StatusRequestHeaderFieldsTooLarge {
		// What is left of the request is not read: the connection cannot
		// carry another one after it.
		w.Header().Set("Connection", "close")
	}
	_, out := runtime.MarshalerForRequest(mux, r)
	runtime.HTTPError(ctx, mux, out, w, r, &runtime.HTTPStatusError{HTTPStatus: ref.http, Err: err})
}
