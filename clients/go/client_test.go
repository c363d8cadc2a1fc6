package sluice_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	sluice "github.com/sluice-gateway/sluice/clients/go"
)

// pattern is size deterministic bytes, different for every seed.
func pattern(size int, seed int) []byte {
	out := make([]byte, 0, size+32)
	for block := 0; len(out) < size; block++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%d:%d", seed, block)))
		out = append(out, sum[:]...)
	}
	return out[:size]
}

func crc32c(data []byte) uint32 {
	return crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
}

func fastRetry() sluice.Option {
	return sluice.WithRetry(sluice.Retry{Attempts: 50, InitialBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond})
}

func TestWritePersistRecoverCommit(t *testing.T) {
	g := startGateway(t, "")
	ctx := testContext(t)
	c, err := sluice.NewClient(g.address, sluice.WithChunkSize(4096), sluice.WithMaxUnacked(16384))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := pattern(300_000, 1)
	target := g.uri("out/part-0")

	stream, err := c.Open(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if stream.Path() != target {
		t.Fatalf("resolved path %q, want %q", stream.Path(), target)
	}
	for i := 0; i < 100_000; i += 77 {
		if _, err := stream.Write(data[i:min(i+77, 100_000)]); err != nil {
			t.Fatal(err)
		}
	}
	handle, err := stream.Persist(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Write(data[100_000:150_000]); err != nil { // lost in the crash
		t.Fatal(err)
	}
	if err := stream.Abort(ctx); err != nil {
		t.Fatal(err)
	}

	resumed, err := c.Recover(ctx, handle)
	if err != nil {
		t.Fatal(err)
	}
	if resumed.Position() != 100_000 || resumed.CRC32C() != crc32c(data[:100_000]) {
		t.Fatalf("recovered at %d with CRC32C %#x", resumed.Position(), resumed.CRC32C())
	}
	if _, err := io.Copy(resumed, bytes.NewReader(data[100_000:])); err != nil {
		t.Fatal(err)
	}
	committer, err := resumed.CloseForCommit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(g.files, "out/part-0")); !os.IsNotExist(err) {
		t.Fatalf("visible before the commit: %v", err)
	}
	committed, err := committer.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if committed.Path != target || committed.Size != uint64(len(data)) || committed.CRC32C != crc32c(data) {
		t.Fatalf("committed %+v", committed)
	}
	stored, _ := os.ReadFile(filepath.Join(g.files, "out/part-0"))
	if !bytes.Equal(stored, data) {
		t.Fatal("the committed bytes differ from the bytes written")
	}
	reader, err := c.Read(ctx, target, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	read, err := io.ReadAll(reader)
	reader.Close()
	if err != nil || !bytes.Equal(read, data) {
		t.Fatalf("Read: %d bytes, %v", len(read), err)
	}

	if _, err := committer.Commit(ctx); !errors.Is(err, sluice.ErrAlreadyExists) {
		t.Fatalf("a second commit: %v, want ErrAlreadyExists", err)
	}
	again, err := c.Committer(committer.Handle).CommitAfterRecovery(ctx)
	if err != nil || again.Size != uint64(len(data)) {
		t.Fatalf("commit after recovery: %+v, %v", again, err)
	}
	entries, err := c.List(ctx, g.uri("out"))
	if err != nil || len(entries) != 1 || entries[0].Name != "part-0" {
		t.Fatalf("List: %v, %v", entries, err)
	}
	if ok, err := c.Exists(ctx, target); !ok || err != nil {
		t.Fatalf("Exists: %v, %v", ok, err)
	}
	if err := c.Rename(ctx, target, g.uri("out/part-1")); err != nil {
		t.Fatal(err)
	}
	if deleted, err := c.Delete(ctx, g.uri("out"), true); !deleted || err != nil {
		t.Fatalf("Delete: %v, %v", deleted, err)
	}
}

func TestErrorsAreTypedByStatusCode(t *testing.T) {
	g := startGateway(t, "")
	ctx := testContext(t)
	c, err := sluice.NewClient(g.address, sluice.WithRetry(sluice.Retry{Attempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cases := []struct {
		name string
		call func() error
		want *sluice.Error
	}{
		{"unknown scheme", func() error { _, err := c.Open(ctx, "nope://bucket/x"); return err }, sluice.ErrUnimplemented},
		{"forged handle", func() error { _, err := c.Recover(ctx, []byte("not a handle")); return err }, sluice.ErrInvalidArgument},
		{"missing file", func() error { _, err := c.Stat(ctx, g.uri("missing")); return err }, sluice.ErrNotFound},
		{"relative path", func() error { _, err := c.Open(ctx, "relative/path"); return err }, sluice.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) || status.Code(err) != tc.want.Code {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var e *sluice.Error
			if !errors.As(err, &e) || e.Message == "" {
				t.Fatalf("no message from the gateway: %v", err)
			}
		})
	}
	stream, err := c.Open(ctx, g.uri("typed/a"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(stream, "abc")
	committer, err := stream.CloseForCommit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Write([]byte("more")); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("write after close: %v", err)
	}
	if _, err := committer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestCutConnectionsAreRetriedWithoutDuplicates(t *testing.T) {
	g := startGateway(t, "")
	p := startProxy(t, g.address, 0)
	ctx := testContext(t)
	c, err := sluice.NewClient(p.address, sluice.WithChunkSize(64<<10), sluice.WithMaxUnacked(4<<20), fastRetry())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := pattern(24<<20, 3)
	stream, err := c.Open(ctx, g.uri("cut/part-0"))
	if err != nil {
		t.Fatal(err)
	}
	cuts := 0
	for i := 0; i < len(data); i += 1 << 20 {
		if _, err := stream.Write(data[i : i+1<<20]); err != nil {
			t.Fatal(err)
		}
		if (i>>20)%3 == 1 {
			time.Sleep(5 * time.Millisecond)
			cuts += p.cut()
		}
		if (i>>20)%8 == 7 {
			if _, err := stream.Persist(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	committer, err := stream.CloseForCommit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.cut()
	if _, err := committer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if cuts < 5 {
		t.Fatalf("only %d connections were cut", cuts)
	}
	stored, _ := os.ReadFile(filepath.Join(g.files, "cut/part-0"))
	if !bytes.Equal(stored, data) {
		t.Fatalf("the committed bytes differ from the bytes written (%d of %d)", len(stored), len(data))
	}
}

func TestDamagedWritesAreCaughtAndSentAgain(t *testing.T) {
	g := startGateway(t, "")
	p := startProxy(t, g.address, 100)
	ctx := testContext(t)
	data := pattern(8<<20, 5)
	for _, checked := range []bool{true, false} {
		opts := []sluice.Option{sluice.WithChunkSize(256 << 10), sluice.WithMaxUnacked(1 << 20), fastRetry()}
		name := "checked"
		if !checked {
			opts = append(opts, sluice.WithoutChecksums())
			name = "unchecked"
		}
		c, err := sluice.NewClient(p.address, opts...)
		if err != nil {
			t.Fatal(err)
		}
		before := p.flipped.Load()
		stream, err := c.Open(ctx, g.uri("crc/"+name))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(stream, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		committer, err := stream.CloseForCommit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		committed, err := committer.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if flipped := p.flipped.Load() - before; flipped < 3 {
			t.Fatalf("the proxy flipped only %d bytes", flipped)
		}
		stored, _ := os.ReadFile(filepath.Join(g.files, "crc", name))
		if checked && (!bytes.Equal(stored, data) || committed.CRC32C != crc32c(data)) {
			t.Fatal("a damaged message was applied")
		}
		if !checked && bytes.Equal(stored, data) {
			t.Fatal("without checksums the damage should have been published")
		}
	}
}

func TestWriteStreamsUseAConnectionOfTheirOwn(t *testing.T) {
	g := startGateway(t, "")
	p := startProxy(t, g.address, 0)
	ctx := testContext(t)
	c, err := sluice.NewClient(p.address)
	if err != nil {
		t.Fatal(err)
	}
	data := pattern(6<<20, 4)
	stream, err := c.Open(ctx, g.uri("separate/part-0"))
	if err != nil {
		t.Fatal(err)
	}
	stream.Write(data[:3<<20])
	if _, err := stream.Persist(ctx); err != nil {
		t.Fatal(err)
	}
	stream.Write(data[3<<20:])
	committer, err := stream.CloseForCommit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := committer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(100 * time.Millisecond)
	carried := p.upstreamBytes()
	sort.Slice(carried, func(i, j int) bool { return carried[i] < carried[j] })
	if len(carried) != 2 || carried[0] >= 64<<10 || carried[1] < 6<<20 {
		t.Fatalf("bytes per connection: %v", carried)
	}
}

func TestBearerToken(t *testing.T) {
	token := "go-job-token"
	digest := sha256.Sum256([]byte(token))
	dir := t.TempDir()
	files := filepath.Join(dir, "jobs")
	g := startGateway(t, fmt.Sprintf(
		"fs.file.allowed-roots: %s\nauth.principals.gojob.token-sha256: %x\nauth.principals.gojob.prefixes: file://%s\n",
		dir, digest, files))
	ctx := testContext(t)
	anonymous, _ := sluice.NewClient(g.address, sluice.WithRetry(sluice.Retry{Attempts: 1}))
	defer anonymous.Close()
	if _, err := anonymous.Open(ctx, "file://"+files+"/part-0"); !errors.Is(err, sluice.ErrUnauthenticated) {
		t.Fatalf("without a token: %v", err)
	}
	c, _ := sluice.NewClient(g.address, sluice.WithBearerToken(token))
	defer c.Close()
	if _, err := c.Open(ctx, "file://"+dir+"/elsewhere"); !errors.Is(err, sluice.ErrPermissionDenied) {
		t.Fatalf("outside the prefixes: %v", err)
	}
	stream, err := c.Open(ctx, "file://"+files+"/part-0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(stream, "with a token")
	committer, err := stream.CloseForCommit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := committer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	stored, _ := os.ReadFile(filepath.Join(files, "part-0"))
	if string(stored) != "with a token" {
		t.Fatalf("stored %q", stored)
	}
}
