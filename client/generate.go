// Package client is the Go client of the tokenwarm API, generated from
// openapi.yaml by oapi-codegen. Do not edit client.gen.go: change
// openapi.yaml and run `go generate ./client`. TestGeneratedClientUpToDate
// fails when the committed code is out of date.
package client

//go:generate go run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 -config cfg.yaml ../openapi.yaml
