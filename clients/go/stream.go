package sluice

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/sluice-gateway/sluice/clients/go/sluicepb"
)

// Stream is a file being written (Flink's RecoverableFsDataOutputStream).
// It is an io.Writer: bytes are batched into Write messages of the chunk
// size and streamed on one Write call, acknowledged every max-unacked
// bytes. A Stream is not safe for concurrent use.
type Stream struct {
	c *Client
	// ctx bounds every Write of the stream (Open's or Recover's).
	ctx       context.Context
	sessionID string
	path      string
	// acked is the position the server acknowledged.
	acked uint64
	// crc is the CRC32C of every byte written, sent or not.
	crc uint32
	// pending holds written bytes not sent yet (less than a chunk).
	pending []byte
	// sent holds the chunks sent since acked, in order, for a retry.
	sent    [][]byte
	sentLen uint64
	call    pb.StorageGateway_WriteClient
	first   bool
	closed  bool
}

func (c *Client) stream(ctx context.Context, id, path string, position uint64, crc uint32) *Stream {
	return &Stream{c: c, ctx: ctx, sessionID: id, path: path, acked: position, crc: crc}
}

// Path is the target as the gateway resolved it (scheme filled in,
// entropy applied).
func (s *Stream) Path() string { return s.path }

// SessionID names the session on the gateway.
func (s *Stream) SessionID() string { return s.sessionID }

// Position is the number of bytes written so far, sent or not.
func (s *Stream) Position() uint64 { return s.acked + s.sentLen + uint64(len(s.pending)) }

// CRC32C is the CRC32C of the bytes written so far (with checksums on).
func (s *Stream) CRC32C() uint32 { return s.crc }

// Write appends p; it is sent once a chunk's worth has gathered.
func (s *Stream) Write(p []byte) (int, error) {
	if s.closed {
		return 0, &Error{Code: codes.FailedPrecondition, Message: fmt.Sprintf("session %s is closed; open or recover a new one", s.sessionID)}
	}
	if s.c.opts.checksums {
		s.crc = crc32.Update(s.crc, castagnoli, p)
	}
	n := len(p)
	chunk := s.c.opts.chunkSize
	for len(p) > 0 {
		if s.pending == nil {
			s.pending = make([]byte, 0, chunk)
		}
		take := min(chunk-len(s.pending), len(p))
		s.pending = append(s.pending, p[:take]...)
		p = p[take:]
		if len(s.pending) == chunk {
			full := s.pending
			s.pending = nil
			if err := s.send(full); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// Flush sends everything written and waits until the gateway has it.
func (s *Stream) Flush() error {
	if len(s.pending) > 0 {
		rest := s.pending
		s.pending = nil
		if err := s.send(rest); err != nil {
			return err
		}
	}
	return s.finishCall()
}

// Persist makes every byte written so far durable and returns the resume
// handle to keep in the checkpoint.
func (s *Stream) Persist(ctx context.Context) ([]byte, error) {
	if err := s.Flush(); err != nil {
		return nil, err
	}
	r, err := retrying(ctx, s.c, func(ctx context.Context, _ int) (*pb.PersistResponse, error) {
		return s.c.rpc.Persist(ctx, &pb.PersistRequest{SessionId: s.sessionID})
	})
	if err != nil {
		return nil, err
	}
	if err := s.check(r.Position, r.Crc32C, "Persist"); err != nil {
		return nil, err
	}
	return r.Handle, nil
}

// CloseForCommit makes everything durable and closes the stream; the
// committer publishes the file.
func (s *Stream) CloseForCommit(ctx context.Context) (*Committer, error) {
	if err := s.Flush(); err != nil {
		return nil, err
	}
	r, err := retrying(ctx, s.c, func(ctx context.Context, _ int) (*pb.CloseForCommitResponse, error) {
		return s.c.rpc.CloseForCommit(ctx, &pb.CloseForCommitRequest{SessionId: s.sessionID})
	})
	if err != nil {
		return nil, err
	}
	if err := s.check(r.Size, r.Crc32C, "CloseForCommit"); err != nil {
		return nil, err
	}
	s.closed = true
	committer := &Committer{c: s.c, Handle: r.Handle}
	if s.c.opts.checksums {
		crc := r.Crc32C
		committer.crc = &crc
	}
	return committer, nil
}

// Abort disposes of the stream with no durability promise (Flink's
// close()).
func (s *Stream) Abort(ctx context.Context) error {
	s.closed = true
	s.pending = nil
	if s.call != nil {
		_ = s.call.CloseSend()
		s.call = nil
	}
	_, err := retrying(ctx, s.c, func(ctx context.Context, _ int) (*pb.AbortResponse, error) {
		return s.c.rpc.Abort(ctx, &pb.AbortRequest{SessionId: s.sessionID})
	})
	return err
}

// check compares the gateway's position and CRC32C after a flush with
// this stream's.
func (s *Stream) check(position uint64, crc uint32, call string) error {
	if position != s.acked {
		return &Error{Code: codes.Internal, Message: fmt.Sprintf("session %s: the gateway is at byte %d, this client at %d", s.sessionID, position, s.acked)}
	}
	if s.c.opts.checksums && crc != s.crc {
		return &Error{Code: codes.DataLoss, Message: fmt.Sprintf("session %s: %s answered CRC32C %#08x for the file's %d bytes, but the bytes this client wrote have %#08x", s.sessionID, call, crc, position, s.crc)}
	}
	return nil
}

func (s *Stream) message(offset uint64, data []byte) *pb.WriteRequest {
	m := &pb.WriteRequest{Offset: offset, Data: data}
	if s.first {
		m.SessionId = s.sessionID
		s.first = false
	}
	if s.c.opts.checksums {
		crc := crc32.Checksum(data, castagnoli)
		m.Crc32C = &crc
	}
	return m
}

func (s *Stream) startCall() error {
	call, err := s.c.writes.Write(s.ctx)
	if err != nil {
		return err
	}
	s.call, s.first = call, true
	return nil
}

// send streams one chunk on the call in flight (starting one if needed).
func (s *Stream) send(data []byte) error {
	offset := s.acked + s.sentLen
	s.sent = append(s.sent, data)
	s.sentLen += uint64(len(data))
	if s.call == nil {
		if err := s.startCall(); err != nil {
			return s.finishCall()
		}
	}
	if err := s.call.Send(s.message(offset, data)); err != nil {
		// The call ended early; its outcome says why, and a retry sends
		// this chunk with the rest.
		return s.finishCall()
	}
	if s.sentLen >= uint64(s.c.opts.maxUnacked) {
		return s.finishCall()
	}
	return nil
}

// finishCall ends the call in flight and settles what it acknowledged;
// it sends the unacknowledged bytes again while the failure allows.
func (s *Stream) finishCall() error {
	attempts := s.c.opts.retry.Attempts
	for attempt := 0; ; {
		if s.call == nil {
			if len(s.sent) == 0 {
				return nil
			}
			if err := s.resend(); err != nil {
				if !retryableWrite(err, nil) || attempt+1 >= attempts {
					return fromRPC(err)
				}
				if err := sleep(s.ctx, s.c.opts.retry.backoff(attempt)); err != nil {
					return err
				}
				attempt++
				continue
			}
		}
		r, err := s.call.CloseAndRecv()
		trailer := s.call.Trailer()
		s.call = nil
		if err == nil {
			if err := s.settle(r.Position); err != nil {
				return err
			}
			continue
		}
		if !retryableWrite(err, trailer) || attempt+1 >= attempts {
			return fromRPC(err)
		}
		if err := sleep(s.ctx, s.c.opts.retry.backoff(attempt)); err != nil {
			return err
		}
		attempt++
	}
}

// retryableWrite says whether a failed Write call may be sent again from
// the acknowledged offset (offsets make that safe): UNAVAILABLE; DATA_LOSS,
// a message damaged on the way of which nothing was applied; and INTERNAL
// or UNKNOWN that the gateway did not send (no sluice-cause), as a cut
// connection may be reported.
func retryableWrite(err error, trailer map[string][]string) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DataLoss:
		return true
	case codes.Internal, codes.Unknown:
		_, ours := trailer["sluice-cause"]
		return !ours
	}
	return false
}

// settle drops what the gateway acknowledged up to position.
func (s *Stream) settle(position uint64) error {
	end := s.acked + s.sentLen
	if position < s.acked || position > end {
		return &Error{Code: codes.Internal, Message: fmt.Sprintf("session %s: the gateway acknowledged byte %d, this client sent %d..%d", s.sessionID, position, s.acked, end)}
	}
	drop := position - s.acked
	for drop > 0 {
		front := s.sent[0]
		if uint64(len(front)) <= drop {
			drop -= uint64(len(front))
			s.sent = s.sent[1:]
		} else {
			s.sent[0] = front[drop:]
			drop = 0
		}
	}
	s.sentLen = end - position
	s.acked = position
	return nil
}

// resend starts a new call carrying every unacknowledged chunk.
func (s *Stream) resend() error {
	if err := s.startCall(); err != nil {
		return err
	}
	offset := s.acked
	for _, data := range s.sent {
		if err := s.call.Send(s.message(offset, data)); err != nil {
			if err == io.EOF {
				return nil // CloseAndRecv says why
			}
			return err
		}
		offset += uint64(len(data))
	}
	return nil
}

// Committer publishes a file (Flink's Committer). Handle is the commit
// handle to keep in the checkpoint until the commit is done.
type Committer struct {
	c      *Client
	Handle []byte
	// crc is the file's CRC32C as CloseForCommit answered it, which the
	// commit's answer must repeat.
	crc *uint32
}

// Committed says where a commit landed.
type Committed struct {
	Path   string
	Size   uint64
	CRC32C uint32
}

// Commit publishes the file; ErrAlreadyExists when the target exists.
func (m *Committer) Commit(ctx context.Context) (Committed, error) {
	return m.commit(ctx, false)
}

// CommitAfterRecovery publishes the file from a restored checkpoint: a
// commit that already happened is recognised and succeeds.
func (m *Committer) CommitAfterRecovery(ctx context.Context) (Committed, error) {
	return m.commit(ctx, true)
}

func (m *Committer) commit(ctx context.Context, afterRecovery bool) (Committed, error) {
	r, err := retrying(ctx, m.c, func(ctx context.Context, attempt int) (*pb.CommitResponse, error) {
		// A retry may follow a commit that landed.
		return m.c.rpc.Commit(ctx, &pb.CommitRequest{Handle: m.Handle, AfterRecovery: afterRecovery || attempt > 0})
	})
	if err != nil {
		return Committed{}, err
	}
	if m.crc != nil && *m.crc != r.Crc32C {
		return Committed{}, &Error{Code: codes.DataLoss, Message: fmt.Sprintf("Commit of %s answered CRC32C %#08x, CloseForCommit %#08x", r.Path, r.Crc32C, *m.crc)}
	}
	return Committed{Path: r.Path, Size: r.Size, CRC32C: r.Crc32C}, nil
}
