// Package fnhook holds the domain types shared by every fnhook service (tenants, functions,
// modules, routes), the platform's one error type, and the names of the queues and events
// that connect the services. Packages beside it wrap one dependency each (store for DynamoDB,
// blob for S3, queue for RabbitMQ, discovery for Consul).
package fnhook

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes. Each maps to one HTTP status in StatusOf.
const (
	ECONFLICT       = "conflict"
	EINTERNAL       = "internal"
	EINVALID        = "invalid"
	ENOTFOUND       = "not_found"
	EUNAUTHORIZED   = "unauthorized"
	EFORBIDDEN      = "forbidden"
	ETOOLARGE       = "too_large"
	EUNPROCESSABLE  = "unprocessable"
	EPRECONDITION   = "precondition_failed"
	EQUOTA          = "over_quota"
	EUNAVAILABLE    = "unavailable"
	ETIMEOUT        = "timeout"
	EBADGATEWAY     = "bad_gateway"
	EDEPENDENCY     = "failed_dependency"
	ENOTIMPLEMENTED = "not_implemented"
)

var statusByCode = map[string]int{
	ECONFLICT:       http.StatusConflict,
	EINTERNAL:       http.StatusInternalServerError,
	EINVALID:        http.StatusBadRequest,
	ENOTFOUND:       http.StatusNotFound,
	EUNAUTHORIZED:   http.StatusUnauthorized,
	EFORBIDDEN:      http.StatusForbidden,
	ETOOLARGE:       http.StatusRequestEntityTooLarge,
	EUNPROCESSABLE:  http.StatusUnprocessableEntity,
	EPRECONDITION:   http.StatusPreconditionFailed,
	EQUOTA:          http.StatusTooManyRequests,
	EUNAVAILABLE:    http.StatusServiceUnavailable,
	ETIMEOUT:        http.StatusGatewayTimeout,
	EBADGATEWAY:     http.StatusBadGateway,
	EDEPENDENCY:     http.StatusFailedDependency,
	ENOTIMPLEMENTED: http.StatusNotImplemented,
}

// Error is the platform's error: a machine-readable code and a message a person can act on.
// It is what every API answers as {"error": {"code": ..., "message": ...}}. Code may be any
// snake_case string; codes not in the table above answer with Status, or 500 when zero.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Status overrides the status of Code when set (for codes outside the table).
	Status int `json:"-"`
	// Err is the cause, logged but never shown to the caller.
	Err error `json:"-"`
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus is the status an API answers this error with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := statusByCode[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or EINTERNAL.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the message of the first *Error in err's chain, or a safe generic text.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "an internal error occurred"
}

// StatusOf returns the HTTP status for err: that of its *Error, or 500.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.HTTPStatus()
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON envelope of every error answer.
type ErrorBody struct {
	Error *Error `json:"error"`
}
