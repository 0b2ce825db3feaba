package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtm-labs/dtm/client/dtmgrpc/dtmgimp"
	"github.com/dtm-labs/dtm/client/dtmgrpc/dtmgpb"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/opencoupon/coupon/internal/dtmquery"
	"github.com/opencoupon/coupon/internal/dtmtest"
	"github.com/opencoupon/coupon/internal/testenv"
)

// branch is a TCC participant over HTTP that DTM calls back: it records
// every call with its headers, and fails Confirms while failConfirm is set.
type branch struct {
	srv         *httptest.Server
	failConfirm atomic.Bool
	mu          sync.Mutex
	calls       []http.Header // by op in callsOp
	callsOp     []string
}

func newBranch(t *testing.T) *branch {
	t.Helper()
	b := &branch{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := strings.TrimPrefix(r.URL.Path, "/")
		b.mu.Lock()
		b.calls = append(b.calls, r.Header.Clone())
		b.callsOp = append(b.callsOp, op)
		b.mu.Unlock()
		if op == "confirm" && b.failConfirm.Load() {
			http.Error(w, "confirm fails for now", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"dtm_result":"SUCCESS"}`)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *branch) count(op string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, o := range b.callsOp {
		if o == op {
			n++
		}
	}
	return n
}

// headers returns the headers of the last call of op.
func (b *branch) headers(op string) http.Header {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.callsOp) - 1; i >= 0; i-- {
		if b.callsOp[i] == op {
			return b.calls[i]
		}
	}
	return nil
}

type answer struct {
	status int
	body   string
}

func call(t *testing.T, method, url, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}
}

func mustOK(t *testing.T, what string, a answer) {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("%s: http %d %s", what, a.status, a.body)
	}
}

func reasonOf(a answer) string {
	var v struct {
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal([]byte(a.body), &v)
	return v.Reason
}

func grpcReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// prepareTCC prepares a TCC over HTTP with headers as its branch headers
// and registers one branch of b.
func prepareTCC(t *testing.T, coord *dtmtest.Coordinator, gid string, b *branch, headers map[string]string) {
	t.Helper()
	base := "http://" + coord.HTTPAddr + "/api/dtmsvr/"
	h, _ := json.Marshal(headers)
	mustOK(t, "prepare", call(t, http.MethodPost, base+"prepare",
		fmt.Sprintf(`{"gid":%q,"trans_type":"tcc","timeout_to_fail":3600,"branch_headers":%s}`, gid, h)))
	mustOK(t, "register branch", call(t, http.MethodPost, base+"registerBranch",
		fmt.Sprintf(`{"gid":%q,"branch_id":"01","trans_type":"tcc","data":"{}","confirm":%q,"cancel":%q}`,
			gid, b.srv.URL+"/confirm", b.srv.URL+"/cancel")))
}

func dtmStatus(t *testing.T, coord *dtmtest.Coordinator, gid string) string {
	t.Helper()
	st, known, err := dtmquery.Client{Addr: coord.HTTPAddr}.Status(context.Background(), gid)
	if err != nil || !known {
		t.Fatalf("query %s: %q, known %v, %v", gid, st, known, err)
	}
	return st
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestEverySubmitRouteIsGuarded resends the Submit of a TCC whose Confirm
// keeps failing (so it stays submitted), and labels a Submit of a prepared
// TCC as another type, over every route DTM has: HTTP, JSON-RPC and gRPC.
// None may finish either transaction without its Confirm; DTM v1.19.0's
// JSON-RPC submit marks the submitted one succeed at once, and a Submit
// labelled workflow sets a prepared one to whatever status it names. Then
// the Confirms succeed and both transactions finish through them. The DTM
// routes the project does not use are refused; those it uses still answer.
func TestEverySubmitRouteIsGuarded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a DTM coordinator")
	}
	t.Run("mysql store", func(t *testing.T) { submitRoutes(t, dtmtest.Start(t)) })
	t.Run("redis store", func(t *testing.T) { submitRoutes(t, dtmtest.Start(t, dtmtest.RedisStore())) })
}

func submitRoutes(t *testing.T, coord *dtmtest.Coordinator) {
	b := newBranch(t)
	b.failConfirm.Store(true)
	run := testenv.Unique(t)
	submitted, prepared := run+"-submitted", run+"-prepared"
	prepareTCC(t, coord, submitted, b, nil)
	prepareTCC(t, coord, prepared, b, nil)
	api := "http://" + coord.HTTPAddr + "/api/"
	mustOK(t, "submit", call(t, http.MethodPost, api+"dtmsvr/submit", fmt.Sprintf(`{"gid":%q,"trans_type":"tcc"}`, submitted)))
	testenv.Eventually(t, 30*time.Second, "the Confirm failing", func() bool { return b.count("confirm") > 0 })
	dtm := dtmgimp.MustGetDtmClient(coord.GRPCAddr)

	for _, tt := range []struct {
		name string
		gid  string
		// do resends; it returns the refusal's reason, "" when accepted.
		do         func(t *testing.T, gid string) string
		wantReason string
	}{
		{"http submit", submitted, func(t *testing.T, gid string) string {
			return reasonOf(call(t, http.MethodPost, api+"dtmsvr/submit", fmt.Sprintf(`{"gid":%q,"trans_type":"tcc","wait_result":true}`, gid)))
		}, ""},
		{"http submit labelled workflow", submitted, func(t *testing.T, gid string) string {
			return reasonOf(call(t, http.MethodPost, api+"dtmsvr/submit",
				fmt.Sprintf(`{"gid":%q,"trans_type":"workflow","req_extra":{"status":"succeed"}}`, gid)))
		}, "TRANS_TYPE_MISMATCH"},
		{"http submit labelled workflow, prepared", prepared, func(t *testing.T, gid string) string {
			return reasonOf(call(t, http.MethodPost, api+"dtmsvr/submit",
				fmt.Sprintf(`{"gid":%q,"trans_type":"workflow","req_extra":{"status":"succeed"}}`, gid)))
		}, "TRANS_TYPE_MISMATCH"},
		{"http submit labelled saga", submitted, func(t *testing.T, gid string) string {
			return reasonOf(call(t, http.MethodPost, api+"dtmsvr/submit", fmt.Sprintf(`{"gid":%q,"trans_type":"saga","wait_result":true}`, gid)))
		}, "TRANS_TYPE_MISMATCH"},
		{"json-rpc submit", submitted, func(t *testing.T, gid string) string {
			return reasonOf(call(t, http.MethodPost, api+"json-rpc",
				fmt.Sprintf(`{"jsonrpc":"2.0","id":"1","method":"submit","params":{"gid":%q,"trans_type":"tcc","wait_result":true}}`, gid)))
		}, "ROUTE_NOT_SERVED"},
		{"json-rpc submit, prepared", prepared, func(t *testing.T, gid string) string {
			return reasonOf(call(t, http.MethodPost, api+"json-rpc",
				fmt.Sprintf(`{"jsonrpc":"2.0","id":"1","method":"submit","params":{"gid":%q,"trans_type":"workflow","req_extra":{"status":"succeed"}}}`, gid)))
		}, "ROUTE_NOT_SERVED"},
		{"grpc submit", submitted, func(t *testing.T, gid string) string {
			_, err := dtm.Submit(ctxT(t), &dtmgpb.DtmRequest{Gid: gid, TransType: "tcc", TransOptions: &dtmgpb.DtmTransOptions{WaitResult: true}})
			return grpcReason(err)
		}, ""},
		{"grpc submit labelled workflow", submitted, func(t *testing.T, gid string) string {
			_, err := dtm.Submit(ctxT(t), &dtmgpb.DtmRequest{Gid: gid, TransType: "workflow", ReqExtra: map[string]string{"status": "succeed"}})
			return grpcReason(err)
		}, "TRANS_TYPE_MISMATCH"},
		{"grpc submit labelled workflow, prepared", prepared, func(t *testing.T, gid string) string {
			_, err := dtm.Submit(ctxT(t), &dtmgpb.DtmRequest{Gid: gid, TransType: "workflow", ReqExtra: map[string]string{"status": "succeed"}})
			return grpcReason(err)
		}, "TRANS_TYPE_MISMATCH"},
		{"http forceStop", submitted, func(t *testing.T, gid string) string {
			return reasonOf(call(t, http.MethodPost, api+"dtmsvr/forceStop", fmt.Sprintf(`{"gid":%q}`, gid)))
		}, "ROUTE_NOT_SERVED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := dtmStatus(t, coord, tt.gid)
			if got := tt.do(t, tt.gid); got != tt.wantReason {
				t.Errorf("refusal reason = %q; want %q", got, tt.wantReason)
			}
			if st := dtmStatus(t, coord, tt.gid); st != before {
				t.Errorf("transaction went from %s to %s without its Confirm", before, st)
			}
		})
	}

	t.Run("grpc refusals", func(t *testing.T) {
		_, err := dtm.PrepareWorkflow(ctxT(t), &dtmgpb.DtmRequest{Gid: run + "-wf", TransType: "workflow"})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("PrepareWorkflow = %v; want Unimplemented", err)
		}
		_, err = dtm.Subscribe(ctxT(t), &dtmgpb.DtmTopicRequest{Topic: "t", URL: "http://127.0.0.1:1/x"})
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("Subscribe = %v; want Unimplemented", err)
		}
		_, err = dtm.Submit(ctxT(t), &dtmgpb.DtmRequest{Gid: run + "-never-prepared", TransType: "tcc"})
		if status.Code(err) != codes.NotFound || grpcReason(err) != "TRANS_NOT_FOUND" {
			t.Errorf("Submit of a tcc never prepared = %v; want NotFound TRANS_NOT_FOUND", err)
		}
		_, err = dtm.Prepare(ctxT(t), &dtmgpb.DtmRequest{Gid: run + "-xa", TransType: "xa"})
		if status.Code(err) != codes.InvalidArgument || grpcReason(err) != "TRANS_TYPE_NOT_SERVED" {
			t.Errorf("Prepare of an xa = %v; want InvalidArgument TRANS_TYPE_NOT_SERVED", err)
		}
	})

	t.Run("http routes not used", func(t *testing.T) {
		for _, r := range []struct{ method, path string }{
			{"GET", "dtmsvr/version"},
			{"POST", "dtmsvr/forceStop"},
			{"POST", "dtmsvr/registerXaBranch"},
			{"POST", "dtmsvr/registerTccBranch"},
			{"POST", "dtmsvr/prepareWorkflow"},
			{"GET", "dtmsvr/resetCronTime"},
			{"POST", "dtmsvr/resetNextCronTime"},
			{"GET", "dtmsvr/subscribe"},
			{"GET", "dtmsvr/unsubscribe"},
			{"DELETE", "dtmsvr/topic/x"},
			{"GET", "dtmsvr/scanKV"},
			{"GET", "dtmsvr/queryKV"},
			{"POST", "json-rpc"},
			{"GET", "dtmsvr/submit"},
		} {
			a := call(t, r.method, api+r.path, fmt.Sprintf(`{"gid":%q,"trans_type":"tcc"}`, submitted))
			if a.status != http.StatusNotFound || reasonOf(a) != "ROUTE_NOT_SERVED" {
				t.Errorf("%s %s = %d %s; want 404 ROUTE_NOT_SERVED", r.method, r.path, a.status, a.body)
			}
		}
		for _, path := range []string{"ping", "metrics", "dtmsvr/newGid", "dtmsvr/query?gid=" + submitted, "dtmsvr/all?limit=5"} {
			mustOK(t, "GET "+path, call(t, http.MethodGet, api+path, ""))
		}
	})

	if st := dtmStatus(t, coord, submitted); st != "submitted" {
		t.Fatalf("%s is %s before its Confirm succeeded; want submitted", submitted, st)
	}
	confirms := b.count("confirm")
	b.failConfirm.Store(false)
	for _, gid := range []string{submitted, prepared} {
		// The resubmit confirms at once rather than at the next retry.
		if _, err := dtm.Submit(ctxT(t), &dtmgpb.DtmRequest{Gid: gid, TransType: "tcc"}); err != nil {
			t.Fatalf("submit %s: %v", gid, err)
		}
	}
	for _, gid := range []string{submitted, prepared} {
		testenv.Eventually(t, 30*time.Second, gid+" succeeding", func() bool { return dtmStatus(t, coord, gid) == "succeed" })
	}
	if got := b.count("confirm"); got < confirms+2 {
		t.Errorf("%d Confirms after they were let through; want one per transaction", got-confirms)
	}
	if n := b.count("cancel"); n != 0 {
		t.Errorf("%d Cancels; want none", n)
	}
}

// TestCoordinatorRedactsCredentials: a TCC's branch headers carry an
// authorization and an API key. The coordinator still sends them on its
// branch calls, but neither appears in what any route that reads
// transactions answers, before or after the commit, nor in its logs at
// debug level; a header that is not a credential is answered as it is.
func TestCoordinatorRedactsCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a DTM coordinator")
	}
	t.Setenv("LOG_LEVEL", "DEBUG") // DTM's logger, in the child process
	debug := dtmtest.Set("log.level", "debug")
	t.Run("mysql store", func(t *testing.T) { redacts(t, dtmtest.Start(t, debug)) })
	t.Run("redis store", func(t *testing.T) { redacts(t, dtmtest.Start(t, debug, dtmtest.RedisStore())) })
}

func redacts(t *testing.T, coord *dtmtest.Coordinator) {
	b := newBranch(t)
	run := testenv.Unique(t)
	gid := run + "-tcc"
	bearer, apiKey, visible := "Bearer tok-"+run, "key-"+run, "trace-"+run
	headers := map[string]string{"authorization": bearer, "x-api-key": apiKey, "x-trace": visible}
	prepareTCC(t, coord, gid, b, headers)

	api := "http://" + coord.HTTPAddr + "/api/"
	reads := func(t *testing.T, status string) {
		t.Helper()
		for _, path := range []string{
			"dtmsvr/query?gid=" + gid,
			"dtmsvr/all?gid=" + gid,
			"dtmsvr/all?status=" + status + "&limit=1000",
			"dtmsvr/all?transType=tcc&limit=1000",
		} {
			a := call(t, http.MethodGet, api+path, "")
			mustOK(t, path, a)
			if strings.Contains(a.body, "tok-"+run) || strings.Contains(a.body, apiKey) {
				t.Errorf("GET %s answers a credential: %s", path, a.body)
			}
			if !strings.Contains(a.body, visible) || !strings.Contains(a.body, "[REDACTED]") {
				t.Errorf("GET %s = %s; want the transaction with x-trace shown and the credentials redacted", path, a.body)
			}
		}
	}
	reads(t, "prepared")

	h, _ := json.Marshal(headers)
	mustOK(t, "submit", call(t, http.MethodPost, api+"dtmsvr/submit",
		fmt.Sprintf(`{"gid":%q,"trans_type":"tcc","branch_headers":%s}`, gid, h)))
	testenv.Eventually(t, 30*time.Second, "the transaction committing", func() bool { return dtmStatus(t, coord, gid) == "succeed" })
	got := b.headers("confirm")
	if got.Get("Authorization") != bearer || got.Get("X-Api-Key") != apiKey {
		t.Errorf("the Confirm carried authorization %q, x-api-key %q; want the stored %q, %q",
			got.Get("Authorization"), got.Get("X-Api-Key"), bearer, apiKey)
	}
	reads(t, "succeed")

	coord.Stop()
	logs := coord.Logs()
	if !strings.Contains(logs, gid) || !strings.Contains(logs, "[REDACTED]") {
		t.Fatalf("the coordinator logged nothing about %s's headers; the scan would prove nothing:\n%s", gid, logs)
	}
	for _, secret := range []string{"tok-" + run, apiKey} {
		if i := strings.Index(logs, secret); i >= 0 {
			t.Errorf("the coordinator logged %q: …%s…", secret, logs[max(0, i-300):min(len(logs), i+100)])
		}
	}
}
