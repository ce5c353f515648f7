package tenants

import (
	"context"
	"errors"
	"fmt"
	"strings"

	fnhook "github.com/fnhook/fnhook/libs"
)

// ErrNoCapacity answers a resolve when no runner could be had within AssignWait: every
// runner of the node has a call in flight, or none could start. Its status and
// Retry-After are the registry's.
var ErrNoCapacity = &fnhook.Error{Code: fnhook.CodeNoCapacity, Message: "no runner is available on this node right now; retry shortly"}

// usable answers the manifest's build state as the resolve API's errors.
func usable(f fnhook.Function) error {
	switch f.Status {
	case fnhook.StatusReady:
		return nil
	case fnhook.StatusBuilding:
		msg := fmt.Sprintf("function %q version %d is being built", f.Name, f.Version)
		if len(f.Pending) > 0 {
			msg += " (waiting for " + strings.Join(f.Pending, ", ") + ")"
		}
		return &fnhook.Error{Code: fnhook.CodeFunctionBuilding, Message: msg}
	case fnhook.StatusFailed:
		msg := f.Error
		if msg == "" {
			msg = "the function failed to build"
		}
		return &fnhook.Error{Code: fnhook.CodeFunctionFailed, Message: msg}
	default:
		return fmt.Errorf("function %s/%s has unknown status %q", f.Tenant, f.Name, f.Status)
	}
}

// runnerFault tells a broken or lost runner (try another one) from a function the runner
// refused (no other runner would take it either).
func runnerFault(err error) bool {
	var fe *fnhook.Error
	if !errors.As(err, &fe) {
		return true // no answer at all
	}
	switch fe.Code {
	case fnhook.CodeCompileError, fnhook.CodeInvalidFunction, fnhook.CodeInvalidDependency, fnhook.CodeTooManyFunctions, fnhook.CodeTooLarge:
		return false
	}
	return true
}

// loadError turns a load refused by the runner into the resolve API's answer.
func loadError(tenant, name string, err error) error {
	var fe *fnhook.Error
	if errors.As(err, &fe) {
		switch fe.Code {
		case fnhook.CodeCompileError, fnhook.CodeInvalidFunction, fnhook.CodeInvalidDependency:
			return &fnhook.Error{Code: fnhook.CodeFunctionFailed, Message: fe.Message, Err: err}
		case fnhook.CodeTooManyFunctions:
			return &fnhook.Error{Code: fnhook.CodeOverQuota, Message: fe.Message, Err: err}
		case fnhook.CodeTooLarge:
			return &fnhook.Error{Code: fnhook.CodeTooLarge, Message: "the function's code is too large for a runner", Err: err}
		}
	}
	return &fnhook.Error{Code: fnhook.CodeUnavailable, Message: "the function could not be loaded on a runner; retry shortly",
		Err: fmt.Errorf("load %s/%s: %w", tenant, name, err)}
}

// moduleError keeps the cache's own answers (failed or missing module) and turns faults
// (download, digest) into a retryable 503 whose cause is logged, not shown.
func moduleError(err error) error {
	var fe *fnhook.Error
	if errors.As(err, &fe) {
		return err
	}
	return &fnhook.Error{Code: fnhook.CodeModuleUnavailable,
		Message: "a module of this function could not be installed on the node; retry shortly", Err: err}
}

// outcome is a resolve's metric label: warm, cold, or its error code.
func outcome(err error) string {
	switch code := fnhook.ErrorCode(err); code {
	case fnhook.CodeNotFound, fnhook.CodeFunctionBuilding, fnhook.CodeFunctionFailed, fnhook.CodeNoCapacity,
		fnhook.CodeUnavailable, fnhook.CodeOverQuota, fnhook.CodeTooLarge, fnhook.CodeModuleUnavailable:
		return code
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "canceled"
	}
	return "error"
}
