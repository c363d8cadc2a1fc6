package dev.sluice.client;

import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.IOException;

/**
 * A failed call: the gRPC status code and the gateway's message, which names the path or session
 * and what to do. One subclass per code the gateway answers; all are {@link IOException}s, as
 * Flink's file-system interfaces want.
 */
public class SluiceException extends IOException {
  private final Status.Code code;
  private final String details;

  public SluiceException(Status.Code code, String details) {
    super(code + ": " + details);
    this.code = code;
    this.details = details;
  }

  public Status.Code code() {
    return code;
  }

  public String details() {
    return details;
  }

  /** The typed exception of a failed call. */
  public static SluiceException of(Status status) {
    String details = status.getDescription() == null ? "" : status.getDescription();
    return of(status.getCode(), details);
  }

  /** The typed exception of a code. */
  public static SluiceException of(Status.Code code, String details) {
    switch (code) {
      case NOT_FOUND:
        return new NotFound(details);
      case FAILED_PRECONDITION:
        return new FailedPrecondition(details);
      case ALREADY_EXISTS:
        return new AlreadyExists(details);
      case INVALID_ARGUMENT:
        return new InvalidArgument(details);
      case OUT_OF_RANGE:
        return new OutOfRange(details);
      case PERMISSION_DENIED:
        return new PermissionDenied(details);
      case UNAUTHENTICATED:
        return new Unauthenticated(details);
      case RESOURCE_EXHAUSTED:
        return new ResourceExhausted(details);
      case ABORTED:
        return new Aborted(details);
      case UNIMPLEMENTED:
        return new Unimplemented(details);
      case UNAVAILABLE:
        return new Unavailable(details);
      case DEADLINE_EXCEEDED:
        return new DeadlineExceeded(details);
      case DATA_LOSS:
        return new DataLoss(details);
      case INTERNAL:
        return new Internal(details);
      default:
        return new SluiceException(code, details);
    }
  }

  /** Whether the gateway itself answered (its statuses carry {@code sluice-cause}). */
  static boolean fromGateway(Throwable error) {
    Metadata trailers = Status.trailersFromThrowable(error);
    return trailers != null
        && trailers.containsKey(Metadata.Key.of("sluice-cause", Metadata.ASCII_STRING_MARSHALLER));
  }

  static SluiceException of(Throwable error) {
    if (error instanceof SluiceException e) {
      return e;
    }
    if (error instanceof StatusRuntimeException e) {
      return of(e.getStatus());
    }
    return of(Status.fromThrowable(error));
  }

  /** An unknown or finished session (recover from the last handle), or a missing path. */
  public static final class NotFound extends SluiceException {
    public NotFound(String details) {
      super(Status.Code.NOT_FOUND, details);
    }
  }

  /** A write after close, a handle whose staged data is gone, other bytes at the target. */
  public static final class FailedPrecondition extends SluiceException {
    public FailedPrecondition(String details) {
      super(Status.Code.FAILED_PRECONDITION, details);
    }
  }

  /** The target exists; sluice never replaces a file. */
  public static final class AlreadyExists extends SluiceException {
    public AlreadyExists(String details) {
      super(Status.Code.ALREADY_EXISTS, details);
    }
  }

  public static final class InvalidArgument extends SluiceException {
    public InvalidArgument(String details) {
      super(Status.Code.INVALID_ARGUMENT, details);
    }
  }

  public static final class OutOfRange extends SluiceException {
    public OutOfRange(String details) {
      super(Status.Code.OUT_OF_RANGE, details);
    }
  }

  public static final class PermissionDenied extends SluiceException {
    public PermissionDenied(String details) {
      super(Status.Code.PERMISSION_DENIED, details);
    }
  }

  public static final class Unauthenticated extends SluiceException {
    public Unauthenticated(String details) {
      super(Status.Code.UNAUTHENTICATED, details);
    }
  }

  /** A limit; the message names its key. */
  public static final class ResourceExhausted extends SluiceException {
    public ResourceExhausted(String details) {
      super(Status.Code.RESOURCE_EXHAUSTED, details);
    }
  }

  /** The session was reclaimed for inactivity, or a second Write ran on it at once. */
  public static final class Aborted extends SluiceException {
    public Aborted(String details) {
      super(Status.Code.ABORTED, details);
    }
  }

  public static final class Unimplemented extends SluiceException {
    public Unimplemented(String details) {
      super(Status.Code.UNIMPLEMENTED, details);
    }
  }

  /** The gateway or its store could not be reached, after retries. */
  public static final class Unavailable extends SluiceException {
    public Unavailable(String details) {
      super(Status.Code.UNAVAILABLE, details);
    }
  }

  public static final class DeadlineExceeded extends SluiceException {
    public DeadlineExceeded(String details) {
      super(Status.Code.DEADLINE_EXCEEDED, details);
    }
  }

  /** Bytes damaged on the way (after retries), or a CRC32C that is not the bytes written. */
  public static final class DataLoss extends SluiceException {
    public DataLoss(String details) {
      super(Status.Code.DATA_LOSS, details);
    }
  }

  public static final class Internal extends SluiceException {
    public Internal(String details) {
      super(Status.Code.INTERNAL, details);
    }
  }
}
