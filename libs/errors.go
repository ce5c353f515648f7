// Package fnhook holds the domain types shared by every fnhook service (tenants, functions,
// modules, routes), the platform's one error type with its registry of codes (each code's
// HTTP status and retry policy), and the names of the queues and events that connect the
// services. Packages beside it wrap one dependency each (store for DynamoDB, blob for S3,
// queue for RabbitMQ, discovery for Consul).
package fnhook

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error is the platform's error: a machine-readable code and a message a person can act on.
// It is what every API answers as {"error": {"code": ..., "message": ...}}. Code is one of
// the registry's (codes.go), which gives the answer's status and Retry-After; an error
// decoded from an upstream's answer keeps that answer's status and Retry-After instead.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Status overrides the status of Code when set: the status an upstream answered with,
	// or that of a code outside the registry (500 when zero).
	Status int `json:"-"`
	// Retry overrides the retry policy of Code when positive: the Retry-After an upstream
	// answered with, which a service relaying the error passes on.
	Retry time.Duration `json:"-"`
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
	if s, ok := codeIndex[e.Code]; ok {
		return s.Status
	}
	return http.StatusInternalServerError
}

// RetryAfter is how long the caller should wait before trying again, sent as Retry-After;
// 0 means no Retry-After. It is Retry when set, else the registry's policy for Code; a 503
// without either still asks for DefaultRetryAfter.
func (e *Error) RetryAfter() time.Duration {
	if e.Retry > 0 {
		return e.Retry
	}
	if s, ok := codeIndex[e.Code]; ok && s.RetryAfter > 0 {
		return s.RetryAfter
	}
	if e.HTTPStatus() == http.StatusServiceUnavailable {
		return DefaultRetryAfter
	}
	return 0
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// asError returns the first *Error in err's chain, or nil.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// ErrorCode returns the code of the first *Error in err's chain, or CodeInternal.
func ErrorCode(err error) string {
	if e := asError(err); e != nil {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the message of the first *Error in err's chain, or a safe generic text.
func ErrorMessage(err error) string {
	if e := asError(err); e != nil {
		return e.Message
	}
	return "an internal error occurred"
}

// StatusOf returns the HTTP status for err: that of its *Error, or 500.
func StatusOf(err error) int {
	if e := asError(err); e != nil {
		return e.HTTPStatus()
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON envelope of every error answer.
type ErrorBody struct {
	Error *Error `json:"error"`
}
