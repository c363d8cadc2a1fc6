package sluice

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failed call: the gRPC status code and the server's message,
// which names the path or session and what to do. Check it with errors.Is
// against the sentinels below, or with status.Code.
type Error struct {
	Code    codes.Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "sluice: " + e.Code.String()
	}
	return fmt.Sprintf("sluice: %s: %s", e.Code, e.Message)
}

// Is matches a sentinel of the same code: errors.Is(err, ErrNotFound).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code
}

// GRPCStatus makes status.Code and status.FromError work on it.
func (e *Error) GRPCStatus() *status.Status {
	return status.New(e.Code, e.Message)
}

// The sentinels, one per status code the gateway answers (README, Status
// codes).
var (
	// ErrNotFound: an unknown or finished session (recover from the last
	// handle), or a missing path on the read side.
	ErrNotFound = &Error{Code: codes.NotFound}
	// ErrFailedPrecondition: a write after close, a handle whose staged
	// data is gone, a commit after recovery that finds other bytes.
	ErrFailedPrecondition = &Error{Code: codes.FailedPrecondition}
	// ErrAlreadyExists: the target exists; sluice never replaces a file.
	ErrAlreadyExists    = &Error{Code: codes.AlreadyExists}
	ErrInvalidArgument  = &Error{Code: codes.InvalidArgument}
	ErrOutOfRange       = &Error{Code: codes.OutOfRange}
	ErrPermissionDenied = &Error{Code: codes.PermissionDenied}
	ErrUnauthenticated  = &Error{Code: codes.Unauthenticated}
	// ErrResourceExhausted: a limit; the message names its key.
	ErrResourceExhausted = &Error{Code: codes.ResourceExhausted}
	// ErrAborted: the session was reclaimed for inactivity, or a second
	// Write ran on it at once.
	ErrAborted       = &Error{Code: codes.Aborted}
	ErrUnimplemented = &Error{Code: codes.Unimplemented}
	// ErrUnavailable: the gateway or its store could not be reached, after
	// retries.
	ErrUnavailable      = &Error{Code: codes.Unavailable}
	ErrDeadlineExceeded = &Error{Code: codes.DeadlineExceeded}
	// ErrDataLoss: bytes damaged on the way (after retries), or a CRC32C
	// the gateway answered that is not the one of the bytes written.
	ErrDataLoss  = &Error{Code: codes.DataLoss}
	ErrInternal  = &Error{Code: codes.Internal}
	ErrCancelled = &Error{Code: codes.Canceled}
)

// fromRPC turns a gRPC failure into an *Error; a context's own error stays
// what it is.
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	s, _ := status.FromError(err)
	return &Error{Code: s.Code(), Message: s.Message()}
}
