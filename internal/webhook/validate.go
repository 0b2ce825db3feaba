package webhook

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencoupon/coupon/participant"
)

// maxURLLen bounds an endpoint URL (the column's width).
const maxURLLen = 2048

// maxActorLen is the width of created_by.
const maxActorLen = 128

// invalid is an EINVALID error with reason, naming the offending field.
func invalid(field, reason, format string, args ...any) *participant.Error {
	e := participant.Errorf(participant.EINVALID, reason, field+": "+format, args...)
	e.Metadata = map[string]string{"field": field}
	return e
}

// validateURL accepts absolute https URLs, and http ones when the host is
// loopback or allowHTTP is set. It refuses userinfo (credentials would be
// stored and logged in clear), fragments (never sent) and empty hosts.
func validateURL(raw string, allowHTTP bool) error {
	if raw == "" {
		return invalid("url", ReasonInvalidURL, "required")
	}
	if len(raw) > maxURLLen {
		return invalid("url", ReasonInvalidURL, "longer than %d bytes", maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return invalid("url", ReasonInvalidURL, "not a URL: %v", err)
	}
	switch {
	case !u.IsAbs() || u.Opaque != "":
		return invalid("url", ReasonInvalidURL, "%q is not an absolute URL", raw)
	case u.User != nil:
		return invalid("url", ReasonInvalidURL, "must not carry user information")
	case u.Hostname() == "":
		return invalid("url", ReasonInvalidURL, "has no host")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return invalid("url", ReasonInvalidURL, "must not have a fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return invalid("url", ReasonInvalidURL, "bad port %q", p)
		}
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if allowHTTP || loopback(u.Hostname()) {
			return nil
		}
		return invalid("url", ReasonInsecureURL, "http is allowed only to loopback hosts; use https")
	default:
		return invalid("url", ReasonInvalidURL, "scheme %q is not https", u.Scheme)
	}
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// normalizeTypes checks types against the known event types and returns
// them sorted, without duplicates.
func normalizeTypes(types []string) ([]string, error) {
	out := make([]string, 0, len(types))
	for _, t := range types {
		if !slices.Contains(eventTypes, t) {
			return nil, invalid("event_types", ReasonUnknownEventType, "unknown event type %q (known: %s)", t, strings.Join(eventTypes, ", "))
		}
		out = append(out, t)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func validateActor(actor string) error {
	if actor == "" {
		return participant.Invalid("actor", "required")
	}
	if len(actor) > maxActorLen {
		return participant.Invalid("actor", "longer than %d bytes", maxActorLen)
	}
	return nil
}
