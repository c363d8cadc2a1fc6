// Package sluice is the Go client of sluice, a gRPC storage gateway that
// gives streaming jobs what Apache Flink's RecoverableWriter gives JVM jobs:
// write a file, persist it (a checkpoint), crash, recover from the handle,
// and commit it exactly once.
//
//	c, err := sluice.NewClient("127.0.0.1:50051")
//	stream, err := c.Open(ctx, "s3://bucket/out/part-0")
//	fmt.Fprintln(stream, "record")        // a Stream is an io.Writer
//	handle, err := stream.Persist(ctx)    // keep it in the checkpoint
//	committer, err := stream.CloseForCommit(ctx)
//	_, err = committer.Commit(ctx)
//
// Writes are batched into Write messages that carry their offset and
// CRC32C. A Write call cut by UNAVAILABLE, or refused with DATA_LOSS (a
// message damaged on the way, of which nothing was applied), is sent again
// from the last acknowledged offset, and the server skips what it already
// has: a retried chunk is never duplicated. Unary calls are retried on
// UNAVAILABLE. The CRC32C of the file that Persist, CloseForCommit and
// Commit answer is checked against the bytes written. Write streams run
// on a connection of their own, so bytes in flight never hold back a
// Persist or a Commit. Errors are *Error values, checked with errors.Is
// (ErrNotFound, ErrAlreadyExists, ...) or status.Code.
package sluice

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/sluice-gateway/sluice/clients/go/sluicepb"
)

// castagnoli is CRC32C's table (hardware-accelerated by hash/crc32 where
// the CPU has it).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Retry says how calls are sent again: Attempts in all, with exponential
// backoff from InitialBackoff to MaxBackoff.
type Retry struct {
	Attempts       int
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
}

func (r Retry) backoff(attempt int) time.Duration {
	d := r.InitialBackoff << attempt
	if d <= 0 || d > r.MaxBackoff {
		d = r.MaxBackoff
	}
	return d
}

type options struct {
	chunkSize   int
	maxUnacked  int
	retry       Retry
	token       string
	tls         *tls.Config
	checksums   bool
	dialOptions []grpc.DialOption
}

// Option configures a Client.
type Option func(*options)

// WithChunkSize sets the bytes per Write message (default 1 MiB).
func WithChunkSize(n int) Option { return func(o *options) { o.chunkSize = n } }

// WithMaxUnacked sets the bytes one Write call carries before it ends and
// is acknowledged: what a retry may send again (default 32 MiB).
func WithMaxUnacked(n int) Option { return func(o *options) { o.maxUnacked = n } }

// WithRetry sets how calls are retried (default 8 attempts, 50 ms to 2 s).
func WithRetry(r Retry) Option { return func(o *options) { o.retry = r } }

// WithBearerToken sends "authorization: Bearer <token>" on every call, for
// a gateway with principals.
func WithBearerToken(token string) Option { return func(o *options) { o.token = token } }

// WithTLS makes both connections use TLS (with a client certificate in
// config for mutual TLS).
func WithTLS(config *tls.Config) Option { return func(o *options) { o.tls = config } }

// WithoutChecksums stops sending CRC32Cs and checking the file's.
func WithoutChecksums() Option { return func(o *options) { o.checksums = false } }

// WithDialOptions adds gRPC dial options (interceptors, for one) to both
// connections.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// Client holds two connections to a gateway: one for Write streams, one
// for every other call. It is safe for concurrent use.
type Client struct {
	opts    options
	control *grpc.ClientConn
	data    *grpc.ClientConn
	rpc     pb.StorageGatewayClient
	writes  pb.StorageGatewayClient
}

// NewClient connects to the gateway at target (host:port); connections
// are made on first use.
func NewClient(target string, opts ...Option) (*Client, error) {
	o := options{
		chunkSize:  1 << 20,
		maxUnacked: 32 << 20,
		retry:      Retry{Attempts: 8, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 2 * time.Second},
		checksums:  true,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.chunkSize <= 0 || o.maxUnacked < o.chunkSize || o.retry.Attempts <= 0 {
		return nil, fmt.Errorf("sluice: options: chunk size %d, max unacked %d, %d attempts: give a positive chunk size, max unacked at least that, and one attempt or more", o.chunkSize, o.maxUnacked, o.retry.Attempts)
	}
	dial := []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(o.chunkSize+64<<10),
			grpc.MaxCallRecvMsgSize(64<<20),
		),
	}
	if o.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: o.token, secure: o.tls != nil}))
	}
	dial = append(dial, o.dialOptions...)
	control, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("sluice: cannot reach %s: %w", target, err)
	}
	data, err := grpc.NewClient(target, dial...)
	if err != nil {
		control.Close()
		return nil, fmt.Errorf("sluice: cannot reach %s: %w", target, err)
	}
	return &Client{
		opts:    o,
		control: control,
		data:    data,
		rpc:     pb.NewStorageGatewayClient(control),
		writes:  pb.NewStorageGatewayClient(data),
	}, nil
}

// Close closes both connections.
func (c *Client) Close() error {
	return errors.Join(c.control.Close(), c.data.Close())
}

type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// retrying runs a unary call, again on UNAVAILABLE while attempts remain.
func retrying[T any](ctx context.Context, c *Client, call func(context.Context, int) (T, error)) (T, error) {
	for attempt := 0; ; attempt++ {
		got, err := call(ctx, attempt)
		if err == nil {
			return got, nil
		}
		if status.Code(err) != codes.Unavailable || attempt+1 >= c.opts.retry.Attempts {
			var zero T
			return zero, fromRPC(err)
		}
		if err := sleep(ctx, c.opts.retry.backoff(attempt)); err != nil {
			var zero T
			return zero, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Open starts a new file at path (a URI such as s3://bucket/key, or a path
// the gateway's default scheme resolves). Nothing is visible there before
// the commit. ctx bounds the Open call and every Write of the stream.
func (c *Client) Open(ctx context.Context, path string) (*Stream, error) {
	return c.open(ctx, path, false)
}

// OpenWithEntropy is Open with the scheme's entropy key replaced by random
// characters; Stream.Path says where the file went.
func (c *Client) OpenWithEntropy(ctx context.Context, path string) (*Stream, error) {
	return c.open(ctx, path, true)
}

func (c *Client) open(ctx context.Context, path string, entropy bool) (*Stream, error) {
	opened, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.OpenResponse, error) {
		return c.rpc.Open(ctx, &pb.OpenRequest{Path: path, InjectEntropy: entropy})
	})
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, opened.SessionId, opened.Path, 0, 0), nil
}

// Recover continues the file of a resume handle at exactly its position;
// bytes written after the handle are discarded.
func (c *Client) Recover(ctx context.Context, handle []byte) (*Stream, error) {
	r, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.RecoverResponse, error) {
		return c.rpc.Recover(ctx, &pb.RecoverRequest{Handle: handle})
	})
	if err != nil {
		return nil, err
	}
	return c.stream(ctx, r.SessionId, r.Path, r.Position, r.Crc32C), nil
}

// Committer publishes the file of a commit (or resume) handle kept in a
// checkpoint (Flink's recoverForCommit).
func (c *Client) Committer(handle []byte) *Committer {
	return &Committer{c: c, Handle: handle}
}

// Cleanup frees what only this resume handle keeps (tail objects); true
// when something was removed. It never fails because it was already done.
func (c *Client) Cleanup(ctx context.Context, handle []byte) (bool, error) {
	r, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.CleanupResponse, error) {
		return c.rpc.Cleanup(ctx, &pb.CleanupRequest{Handle: handle})
	})
	if err != nil {
		return false, err
	}
	return r.Cleaned, nil
}

// Capabilities says what the scheme of path promises: resume support,
// part size, the limits in force.
func (c *Client) Capabilities(ctx context.Context, path string) (*pb.CapabilitiesResponse, error) {
	return retrying(ctx, c, func(ctx context.Context, _ int) (*pb.CapabilitiesResponse, error) {
		return c.rpc.Capabilities(ctx, &pb.CapabilitiesRequest{Path: path})
	})
}

// Read returns length bytes (0: to the end) of a committed file from
// offset, as a stream; close it when done.
func (c *Client) Read(ctx context.Context, path string, offset, length uint64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	call, err := c.rpc.Read(ctx, &pb.ReadRequest{Path: path, Offset: offset, Length: length})
	if err != nil {
		cancel()
		return nil, fromRPC(err)
	}
	return &reader{call: call, cancel: cancel}, nil
}

type reader struct {
	call   pb.StorageGateway_ReadClient
	cancel context.CancelFunc
	rest   []byte
}

func (r *reader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		msg, err := r.call.Recv()
		if err == io.EOF {
			return 0, io.EOF
		}
		if err != nil {
			return 0, fromRPC(err)
		}
		r.rest = msg.Data
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

func (r *reader) Close() error {
	r.cancel()
	return nil
}

// Stat says what is at path; ErrNotFound when nothing is.
func (c *Client) Stat(ctx context.Context, path string) (*pb.FileStatus, error) {
	r, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.StatResponse, error) {
		return c.rpc.Stat(ctx, &pb.StatRequest{Path: path})
	})
	if err != nil {
		return nil, err
	}
	return r.Status, nil
}

// List returns the entries one level below a directory, sorted by name,
// every page of them; staging never shows.
func (c *Client) List(ctx context.Context, path string) ([]*pb.FileStatus, error) {
	var entries []*pb.FileStatus
	token := ""
	for {
		page, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.ListResponse, error) {
			return c.rpc.List(ctx, &pb.ListRequest{Path: path, PageToken: token})
		})
		if err != nil {
			return nil, err
		}
		entries = append(entries, page.Entries...)
		if page.NextPageToken == "" {
			return entries, nil
		}
		token = page.NextPageToken
	}
}

// Exists says whether something is at path.
func (c *Client) Exists(ctx context.Context, path string) (bool, error) {
	r, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.ExistsResponse, error) {
		return c.rpc.Exists(ctx, &pb.ExistsRequest{Path: path})
	})
	if err != nil {
		return false, err
	}
	return r.Exists, nil
}

// Delete removes a file, or a directory with recursive; false when there
// was nothing.
func (c *Client) Delete(ctx context.Context, path string, recursive bool) (bool, error) {
	r, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.DeleteResponse, error) {
		return c.rpc.Delete(ctx, &pb.DeleteRequest{Path: path, Recursive: recursive})
	})
	if err != nil {
		return false, err
	}
	return r.Deleted, nil
}

// Mkdirs creates a directory and its parents.
func (c *Client) Mkdirs(ctx context.Context, path string) error {
	_, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.MkdirsResponse, error) {
		return c.rpc.Mkdirs(ctx, &pb.MkdirsRequest{Path: path})
	})
	return err
}

// Rename moves a file; it never replaces one (ErrAlreadyExists).
func (c *Client) Rename(ctx context.Context, from, to string) error {
	_, err := retrying(ctx, c, func(ctx context.Context, _ int) (*pb.RenameResponse, error) {
		return c.rpc.Rename(ctx, &pb.RenameRequest{From: from, To: to})
	})
	return err
}
