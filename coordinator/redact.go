package coordinator

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/dtm-labs/dtm/dtmsvr/storage"
)

// The coordinator stores each transaction's branch headers (an order
// service's authorization, for one) because its branch calls must carry
// them. It keeps them for that alone: whatever it answers or logs has
// their credentials replaced by redacted.
//
// A name is a credential's when, lower-cased, it is authorization,
// proxy-authorization, cookie or set-cookie, or contains auth, token,
// secret, passw, credential, signature, session, cookie, api-key, api_key or
// apikey. The rule errs on hiding a harmless value rather than showing a
// credential.

const redacted = "[REDACTED]"

var credentialParts = []string{"auth", "token", "secret", "passw", "credential", "signature", "session", "cookie", "api-key", "api_key", "apikey"}

// isCredential reports whether a header or field named name holds a
// credential.
func isCredential(name string) bool {
	n := strings.ToLower(name)
	for _, p := range credentialParts {
		if strings.Contains(n, p) {
			return true
		}
	}
	return false
}

// redactTrans hides the credentials of a transaction read from the store
// before it is answered. The store's own copy is untouched: the branch
// calls still carry them.
func redactTrans(g *storage.TransGlobalStore) {
	if g == nil {
		return
	}
	g.BranchHeaders = redactHeaders(g.BranchHeaders)
	g.Ext.Headers = redactHeaders(g.Ext.Headers)
	g.Options = redactJSON(g.Options)
	g.ExtData = redactJSON(g.ExtData)
	g.CustomData = redactJSON(g.CustomData)
}

func redactHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if isCredential(k) {
			v = redacted
		}
		out[k] = v
	}
	return out
}

// redactJSON hides the credentials in a JSON text: the value of every
// member, at any depth, whose name is a credential's. Text that is not
// JSON is redacted as a log line is.
func redactJSON(s string) string {
	if s == "" {
		return s
	}
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil || d.More() {
		return redactText(s)
	}
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(redactValue(v)); err != nil {
		return redacted
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func redactValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if isCredential(k) {
				v[k] = redacted
			} else {
				v[k] = redactValue(x)
			}
		}
	case []any:
		for i, x := range v {
			v[i] = redactValue(x)
		}
	case string:
		// Options and ext data hold JSON objects as strings at times.
		if strings.HasPrefix(strings.TrimSpace(v), "{") {
			return redactJSON(v)
		}
	}
	return v
}

var (
	// jsonName is a JSON member name followed by its colon, at any depth
	// of string escaping: "name": or \"name\": or \\\"name\\\":.
	jsonName = regexp.MustCompile(`(\\*)"([A-Za-z0-9_.-]+)\\*"\s*:\s*`)
	// schemeToken is an Authorization value outside JSON (Go's %v of a
	// header map, a header line).
	schemeToken = regexp.MustCompile(`(?i)\b(bearer|basic|digest|hmac[a-z0-9-]*)(\s+)[^\s"\\,;\]}]+`)
	// queryParam is a credential in a URL's query.
	queryParam = regexp.MustCompile(`([?&][A-Za-z0-9_.-]+=)([^&\s"\\]+)`)
)

// redactText hides credentials in a log line: the string values of JSON
// members (escaped to any depth, as DTM logs JSON inside JSON) whose name
// is a credential's, "Bearer …"-like authorization values anywhere, and
// credential query parameters.
func redactText(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range jsonName.FindAllStringSubmatchIndex(s, -1) {
		if m[0] < last {
			continue
		}
		if !isCredential(s[m[4]:m[5]]) {
			continue
		}
		depth := m[3] - m[2]
		start := m[1] // just past the colon and spaces
		end, ok := stringEnd(s, start, depth)
		if !ok {
			continue
		}
		b.WriteString(s[last:start])
		b.WriteString(s[start : start+depth+1]) // the opening quote
		b.WriteString(redacted)
		last = end // the closing quote, kept
	}
	b.WriteString(s[last:])
	out := schemeToken.ReplaceAllString(b.String(), "${1}${2}"+redacted)
	return queryParam.ReplaceAllStringFunc(out, func(p string) string {
		name, _, _ := strings.Cut(p[1:], "=")
		if !isCredential(name) {
			return p
		}
		return p[:len(name)+2] + redacted
	})
}

// stringEnd finds the JSON string that starts at s[i:] with depth
// backslashes before its quote, and returns the index of its closing
// quote's first backslash (or of the quote, at depth 0).
func stringEnd(s string, i, depth int) (int, bool) {
	open := strings.Repeat(`\`, depth) + `"`
	if !strings.HasPrefix(s[i:], open) {
		return 0, false
	}
	for j := i + len(open); j < len(s); j++ {
		if s[j] != '"' {
			continue
		}
		k := j
		for k > i+len(open) && s[k-1] == '\\' {
			k--
		}
		if j-k == depth {
			return k, true
		}
	}
	return 0, false
}
