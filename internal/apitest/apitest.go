// Package apitest checks HTTP exchanges of tests against openapi.yaml, the
// API contract: every response a test sees must be one the contract
// documents (status, headers, content type and body).
package apitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

func init() {
	// Problem details are JSON; text/html is the callback's finishing page.
	// Registered once here: the registry is global to the process.
	openapi3filter.RegisterBodyDecoder("application/problem+json", openapi3filter.JSONBodyDecoder)
	openapi3filter.RegisterBodyDecoder("text/html", openapi3filter.PlainBodyDecoder)
}

var (
	specOnce sync.Once
	specDoc  *openapi3.T
	specErr  error
)

// SpecPath is the absolute path of the repository's openapi.yaml, found
// relative to this source file so that tests of any package can use it.
func SpecPath() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("apitest: cannot locate source file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "openapi.yaml")
}

// Spec loads and validates openapi.yaml once per test binary. The returned
// document is shared: callers must not modify it.
func Spec(t testing.TB) *openapi3.T {
	t.Helper()
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(SpecPath())
		if err != nil {
			specErr = fmt.Errorf("load %s: %w", SpecPath(), err)
			return
		}
		if err := doc.Validate(loader.Context); err != nil {
			specErr = fmt.Errorf("validate %s: %w", SpecPath(), err)
			return
		}
		specDoc = doc
	})
	if specErr != nil {
		t.Fatalf("apitest: %v", specErr)
	}
	return specDoc
}

// Validator checks HTTP exchanges against the spec. It is safe for
// concurrent use.
type Validator struct {
	router  routers.Router
	options *openapi3filter.Options
}

// New returns a Validator for openapi.yaml. Requests are routed by method
// and path only, so the spec's server URL need not match the test server.
func New(t testing.TB) *Validator {
	t.Helper()
	doc := *Spec(t) // shallow copy: only Servers differs
	doc.Servers = nil
	router, err := gorillamux.NewRouter(&doc)
	if err != nil {
		t.Fatalf("apitest: router: %v", err)
	}
	return &Validator{
		router: router,
		options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
			AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
			SchemaValidationOptions: []openapi3.SchemaValidationOption{
				openapi3.WithStringFormatValidators(formats),
			},
		},
	}
}

// formats validates the string formats the spec uses that kin-openapi
// leaves unchecked by default. A UUID is checked for its textual form only
// (RFC 9562 section 4), so that fixtures such as the nil UUID pass.
var formats = map[string]openapi3.StringFormatValidator{
	"uuid": openapi3.NewRegexpFormatValidator(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`),
	"uri": openapi3.NewCallbackValidator(func(s string) error {
		u, err := url.Parse(s)
		if err != nil {
			return err
		}
		if !u.IsAbs() {
			return errors.New("not an absolute URI")
		}
		return nil
	}),
	"uri-reference": openapi3.NewCallbackValidator(func(s string) error {
		_, err := url.Parse(s)
		return err
	}),
}

// Check fails the test unless the response (status, headers, content type,
// body) is one the spec documents for the operation of req. Unknown paths
// and methods, and undocumented status codes, fail too. Security
// requirements are not checked.
func (v *Validator) Check(t testing.TB, req *http.Request, resp *http.Response, body []byte) {
	t.Helper()
	if err := v.validate(req, resp, body); err != nil {
		t.Errorf("apitest: %s %s → %d: %v", req.Method, req.URL.RequestURI(), resp.StatusCode, err)
	}
}

// validate returns why the exchange does not match the spec, or nil.
func (v *Validator) validate(req *http.Request, resp *http.Response, body []byte) error {
	route, pathParams, err := v.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("not in openapi.yaml: %w", err)
	}
	// ValidateResponse lets a few statuses (301, 304, 307, 308) pass
	// unchecked; undocumented they are still a contract violation. A
	// `default` response documents errors only: a 2xx or 3xx must be
	// listed itself.
	if route.Operation.Responses.Status(resp.StatusCode) == nil &&
		(route.Operation.Responses.Default() == nil || resp.StatusCode < 400) {
		return fmt.Errorf("status %d is not documented for %s", resp.StatusCode, route.Operation.OperationID)
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: pathParams,
			Route:      route,
			Options:    v.options,
		},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Options: v.options,
	}
	input.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(context.Background(), input)
}

// Transport returns an http.RoundTripper that checks every exchange through
// it with Check (next == nil means http.DefaultTransport). The response body
// is read and restored, so callers see it unchanged. Wrap an http.Client
// with it, or the generated client's HTTP doer.
func (v *Validator) Transport(t testing.TB, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &transport{t: t, v: v, next: next}
}

type transport struct {
	t    testing.TB
	v    *Validator
	next http.RoundTripper
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tr.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("apitest: read response body: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	tr.v.Check(tr.t, req, resp, body)
	return resp, nil
}
