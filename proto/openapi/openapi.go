// Package openapi holds the OpenAPI (Swagger 2.0) document of the HTTP/JSON
// API, generated from proto/coupon/v1 by `make generate` and committed, so
// the service can serve the document that matches the code it runs.
package openapi

import _ "embed"

// JSON is coupon.swagger.json.
//
//go:embed coupon.swagger.json
var JSON []byte
