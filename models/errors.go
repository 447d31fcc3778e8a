package models

import "errors"

// ErrNotFound: the record an operation names does not exist. Operations
// that can fail this way say so; test with errors.Is.
var ErrNotFound = errors.New("models: not found")
