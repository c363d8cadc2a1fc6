// Command job is examples/exactly_once/job.py in Go, for the crash harness
// (harness.py --job go): a streaming job shaped like a Flink job with a
// two-phase-commit file sink. It reads a replayable source, writes rolling
// part files through sluice, checkpoints (persist, then an atomic local
// file with the source offset, the resume handle and the commit handles of
// the parts closed since), commits those parts once the checkpoint is
// durable, and on start restores: commit after recovery for every pending
// part, recover for the part in progress, the source from the offset.
//
// -crash METHOD:N:VICTIM:WHEN kills the job, the gateway or both at the
// N-th call of METHOD, before it is sent, in flight, or after its answer.
// Exit codes: 0 done; 75 the gateway went away (restart the job); 1 error.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	sluice "github.com/sluice-gateway/sluice/clients/go"
)

const gatewayLost = 75

func sourceRecord(i int) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("record-%d", i)))
	return fmt.Sprintf("%d %s", i, hex.EncodeToString(sum[:])[:24])
}

// transform is the job's transformation: one output line per record, the
// same as job.py's.
func transform(record string) []byte {
	offset, payload, _ := strings.Cut(record, " ")
	n, _ := strconv.Atoi(offset)
	return []byte(fmt.Sprintf("%09d|%s|%d\n", n, strings.ToUpper(payload), len(payload)))
}

type state struct {
	Offset      int      `json:"offset"`
	Part        int      `json:"part"`
	PartRecords int      `json:"part_records"`
	InProgress  []byte   `json:"in_progress"`
	Pending     [][]byte `json:"pending"`
}

func load(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &state{}, nil
	}
	if err != nil {
		return nil, err
	}
	var s state
	return &s, json.Unmarshal(data, &s)
}

func store(path string, s state) error {
	data, _ := json.Marshal(s)
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// crashHook kills the job and/or the gateway at the N-th call of one
// method, as job.py's CrashHook does.
type crashHook struct {
	spec, method, victim, when string
	n, calls                   int
	gatewayPID                 int
	log                        string
	mu                         sync.Mutex
	fired                      bool
}

func newCrashHook(spec string, pid int, log string) *crashHook {
	parts := strings.Split(spec, ":")
	n, _ := strconv.Atoi(parts[1])
	return &crashHook{spec: spec, method: parts[0], n: n, victim: parts[2], when: parts[3], gatewayPID: pid, log: log}
}

func (h *crashHook) matches(fullMethod string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fired || fullMethod[strings.LastIndex(fullMethod, "/")+1:] != h.method {
		return false
	}
	h.calls++
	return h.calls == h.n
}

func (h *crashHook) fire() {
	h.mu.Lock()
	if h.fired {
		h.mu.Unlock()
		return
	}
	h.fired = true
	h.mu.Unlock()
	if h.log != "" {
		if f, err := os.OpenFile(h.log, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644); err == nil {
			f.WriteString(h.spec + "\n")
			f.Sync()
			f.Close()
		}
	}
	if h.victim == "gateway" || h.victim == "both" {
		_ = syscall.Kill(h.gatewayPID, syscall.SIGKILL)
	}
	if h.victim == "job" || h.victim == "both" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

// fireSoon crashes while the call is in flight: between sent and answered.
func (h *crashHook) fireSoon() {
	time.AfterFunc(time.Duration(rand.IntN(4000))*time.Microsecond, h.fire)
}

func (h *crashHook) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if !h.matches(method) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	switch h.when {
	case "before":
		h.fire()
	case "during":
		h.fireSoon()
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if h.when == "after" {
		h.fire()
	}
	return err
}

func (h *crashHook) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if !h.matches(method) {
		return streamer(ctx, desc, cc, method, opts...)
	}
	if h.when == "before" {
		h.fire()
	}
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return s, err
	}
	return &crashingStream{ClientStream: s, hook: h}, nil
}

// crashingStream crashes mid-stream (the first message goes out, then the
// crash), or once the answer arrived.
type crashingStream struct {
	grpc.ClientStream
	hook *crashHook
	sent int
}

func (s *crashingStream) SendMsg(m any) error {
	if s.hook.when == "during" && s.sent == 1 {
		s.hook.fire()
	}
	s.sent++
	return s.ClientStream.SendMsg(m)
}

func (s *crashingStream) CloseSend() error {
	if s.hook.when == "during" {
		s.hook.fireSoon()
	}
	return s.ClientStream.CloseSend()
}

func (s *crashingStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if s.hook.when == "after" {
		s.hook.fire()
	}
	return err
}

func partName(out string, i int) string { return fmt.Sprintf("%s/part-%05d", out, i) }

func run(ctx context.Context, c *sluice.Client, out, checkpoint string, records, perPart, every int) error {
	s, err := load(checkpoint)
	if err != nil {
		return err
	}
	// Restore: finish the commits the last checkpoint promised...
	for _, handle := range s.Pending {
		if _, err := c.Committer(handle).CommitAfterRecovery(ctx); err != nil {
			return err
		}
	}
	// ...and continue the part in progress where it left off.
	var stream *sluice.Stream
	if s.InProgress != nil {
		if stream, err = c.Recover(ctx, s.InProgress); err != nil {
			return err
		}
	}
	lastHandle := s.InProgress
	fmt.Println("restored")
	offset, part, partRecords := s.Offset, s.Part, s.PartRecords
	var closed [][]byte
	closePart := func() error {
		committer, err := stream.CloseForCommit(ctx)
		if err != nil {
			return err
		}
		closed = append(closed, committer.Handle)
		stream, part, partRecords = nil, part+1, 0
		return nil
	}
	for {
		if offset < records {
			if stream == nil {
				if stream, err = c.Open(ctx, partName(out, part)); err != nil {
					return err
				}
			}
			if _, err := stream.Write(transform(sourceRecord(offset))); err != nil {
				return err
			}
			offset++
			partRecords++
			if partRecords == perPart {
				if err := closePart(); err != nil {
					return err
				}
			}
		}
		if offset%every == 0 || offset == records {
			done := offset == records
			if done && stream != nil {
				if err := closePart(); err != nil {
					return err
				}
			}
			var handle []byte
			if stream != nil {
				if handle, err = stream.Persist(ctx); err != nil {
					return err
				}
			}
			if err := store(checkpoint, state{Offset: offset, Part: part, PartRecords: partRecords, InProgress: handle, Pending: closed}); err != nil {
				return err
			}
			// The checkpoint is durable: commit what it covers.
			for _, pending := range closed {
				if _, err := c.Committer(pending).Commit(ctx); err != nil {
					return err
				}
			}
			closed = nil
			if lastHandle != nil && string(lastHandle) != string(handle) {
				if _, err := c.Cleanup(ctx, lastHandle); err != nil {
					return err
				}
			}
			lastHandle = handle
			if done {
				return nil
			}
		}
	}
}

func main() {
	gateway := flag.String("gateway", "", "host:port of a sluice gateway")
	out := flag.String("out", "", "URI of the output directory")
	checkpoint := flag.String("checkpoint", "", "local checkpoint file")
	records := flag.Int("records", 20000, "records in the source")
	perPart := flag.Int("records-per-part", 250, "records per part file")
	every := flag.Int("checkpoint-every", 50, "records between checkpoints")
	chunk := flag.Int("chunk-size", 1024, "bytes per Write message")
	batch := flag.Int("batch-size", 4096, "bytes per Write call")
	crash := flag.String("crash", "", "METHOD:N:VICTIM:WHEN")
	crashLog := flag.String("crash-log", "", "file the crash hook appends its spec to when it fires")
	gatewayPID := flag.Int("gateway-pid", 0, "the gateway's pid, for the crash hook")
	flag.Parse()
	opts := []sluice.Option{
		sluice.WithChunkSize(*chunk),
		sluice.WithMaxUnacked(max(*batch, *chunk)),
		sluice.WithRetry(sluice.Retry{Attempts: 10, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}),
	}
	if *crash != "" {
		hook := newCrashHook(*crash, *gatewayPID, *crashLog)
		opts = append(opts, sluice.WithDialOptions(grpc.WithUnaryInterceptor(hook.unary), grpc.WithStreamInterceptor(hook.stream)))
	}
	c, err := sluice.NewClient(*gateway, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "job:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	err = run(ctx, c, *out, *checkpoint, *records, *perPart, *every)
	switch {
	case err == nil:
	case errors.Is(err, sluice.ErrNotFound), errors.Is(err, sluice.ErrUnavailable), errors.Is(err, sluice.ErrAborted):
		fmt.Fprintf(os.Stderr, "job: gateway lost (%v); restart me to resume from the checkpoint\n", err)
		os.Exit(gatewayLost)
	default:
		fmt.Fprintf(os.Stderr, "job: failed: %v\n", err)
		os.Exit(1)
	}
}
