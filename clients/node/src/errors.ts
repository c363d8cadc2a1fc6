// Typed errors, one class per gRPC status code the gateway answers, each
// carrying the server's message (which names the path or session and what
// to do).

import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

/** A failed call: `code` is the gRPC status code, `details` the server's message. */
export class SluiceError extends Error {
  readonly code: status;
  readonly details: string;
  constructor(code: status, details: string) {
    super(`${status[code]}: ${details}`);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** An unknown or finished session (recover from the last handle), or a missing path. */
export class NotFound extends SluiceError {}
/** A write after close, a handle whose staged data is gone, other bytes at the target. */
export class FailedPrecondition extends SluiceError {}
/** The target exists; sluice never replaces a file. */
export class AlreadyExists extends SluiceError {}
export class InvalidArgument extends SluiceError {}
export class OutOfRange extends SluiceError {}
export class PermissionDenied extends SluiceError {}
export class Unauthenticated extends SluiceError {}
/** A limit; the message names its key. */
export class ResourceExhausted extends SluiceError {}
/** The session was reclaimed for inactivity, or a second Write ran on it at once. */
export class Aborted extends SluiceError {}
export class Unimplemented extends SluiceError {}
/** The gateway or its store could not be reached, after retries. */
export class Unavailable extends SluiceError {}
export class DeadlineExceeded extends SluiceError {}
/** Bytes damaged on the way (after retries), or a CRC32C that is not the bytes written. */
export class DataLoss extends SluiceError {}
export class Internal extends SluiceError {}

const BY_CODE: Partial<Record<status, new (code: status, details: string) => SluiceError>> = {
  [status.NOT_FOUND]: NotFound,
  [status.FAILED_PRECONDITION]: FailedPrecondition,
  [status.ALREADY_EXISTS]: AlreadyExists,
  [status.INVALID_ARGUMENT]: InvalidArgument,
  [status.OUT_OF_RANGE]: OutOfRange,
  [status.PERMISSION_DENIED]: PermissionDenied,
  [status.UNAUTHENTICATED]: Unauthenticated,
  [status.RESOURCE_EXHAUSTED]: ResourceExhausted,
  [status.ABORTED]: Aborted,
  [status.UNIMPLEMENTED]: Unimplemented,
  [status.UNAVAILABLE]: Unavailable,
  [status.DEADLINE_EXCEEDED]: DeadlineExceeded,
  [status.DATA_LOSS]: DataLoss,
  [status.INTERNAL]: Internal,
};

/** The typed error of a failed call. */
export function fromServiceError(error: ServiceError): SluiceError {
  const Class = BY_CODE[error.code] ?? SluiceError;
  return new Class(error.code, error.details);
}

/** An error of this client's own making, typed by the code it stands for. */
export function make(code: status, details: string): SluiceError {
  const Class = BY_CODE[code] ?? SluiceError;
  return new Class(code, details);
}

/** Whether the gateway itself answered (its statuses carry `sluice-cause`). */
export function fromGateway(metadata: Metadata | undefined): boolean {
  return (metadata?.get('sluice-cause').length ?? 0) > 0;
}
