package sluice_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sluice "github.com/sluice-gateway/sluice/clients/go"
)

// TestTLS: a gateway serving TLS with a certificate for 127.0.0.1, and a
// client that trusts only its CA.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sluice test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	g := startGateway(t, fmt.Sprintf("rpc.tls.cert-file: %s\nrpc.tls.key-file: %s\n", certFile, keyFile))
	ctx := testContext(t)

	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	c, err := sluice.NewClient(g.address, sluice.WithTLS(&tls.Config{RootCAs: roots}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stream, err := c.Open(ctx, g.uri("tls/part-0"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(stream, "over TLS")
	committer, err := stream.CloseForCommit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := committer.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	plain, _ := sluice.NewClient(g.address, sluice.WithRetry(sluice.Retry{Attempts: 1}))
	defer plain.Close()
	if _, err := plain.Open(ctx, g.uri("tls/plain")); err == nil {
		t.Fatal("a plaintext client was served by a TLS gateway")
	}
}

// TestStubsMatchTheProto regenerates sluicepb from ../../proto with the
// pinned plugins and compares: the checked-in stubs never drift.
func TestStubsMatchTheProto(t *testing.T) {
	protoc := os.Getenv("PROTOC")
	if protoc == "" {
		if path, err := exec.LookPath("protoc"); err == nil {
			protoc = path
		}
	}
	if protoc == "" {
		t.Fatal("no protoc: set PROTOC (the sluice tests pass the one protoc-bin-vendored carries) or put protoc on PATH")
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "generate.sh")
	cmd.Env = append(os.Environ(), "PROTOC="+protoc, "OUT="+out)
	if got, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, got)
	}
	for _, name := range []string{"gateway.pb.go", "gateway_grpc.pb.go"} {
		fresh, _ := os.ReadFile(filepath.Join(out, name))
		kept, _ := os.ReadFile(filepath.Join("sluicepb", name))
		if len(fresh) == 0 || !bytes.Equal(fresh, kept) {
			t.Errorf("sluicepb/%s differs from what ../../proto generates: run PROTOC=%s go generate", name, protoc)
		}
	}
}

// TestReadmeExampleRunsAsWritten runs the Go block of the README's
// Clients section as a program, against a real gateway.
func TestReadmeExampleRunsAsWritten(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, found := strings.Cut(string(readme), "```go\n")
	block, _, closed := strings.Cut(after, "```")
	if !found || !closed {
		t.Fatal("the README has no ```go block")
	}
	g := startGateway(t, "")
	dir := "_readme"
	os.MkdirAll(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	program := strings.ReplaceAll(block, "127.0.0.1:50051", g.address)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command("go", "run", "./"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("go run of the README's example: %v\n%s", err, got)
	}
	if string(got) != "first record\nsecond record\n" {
		t.Fatalf("the README's example printed %q", got)
	}
}

// TestConsumerExampleResumesExactlyOnce runs examples/consumer, kills it
// twice mid-stream (records written after its last checkpoint are lost
// with it), starts it again each time, and reads the committed file:
// every record exactly once, in order.
func TestConsumerExampleResumesExactlyOnce(t *testing.T) {
	g := startGateway(t, "")
	dir := t.TempDir()
	binary := filepath.Join(dir, "consumer")
	if got, err := exec.Command("go", "build", "-o", binary, "./examples/consumer").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, got)
	}
	out := g.uri("consumer/out")
	run := func(crashAfter int) (int, string) {
		cmd := exec.Command(binary, "-gateway", g.address, "-out", out, "-checkpoint", filepath.Join(dir, "cp.json"),
			"-records", "5000", "-checkpoint-every", "400", "-crash-after", fmt.Sprint(crashAfter))
		got, err := cmd.CombinedOutput()
		if exit, ok := err.(*exec.ExitError); ok {
			return exit.ExitCode(), string(got)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(got)
	}
	if code, log := run(1234); code != 3 {
		t.Fatalf("the first run should crash: %d\n%s", code, log)
	}
	if code, log := run(2100); code != 3 || !strings.Contains(log, "starting at record 1200") {
		t.Fatalf("the second run should resume at 1200 and crash: %d\n%s", code, log)
	}
	code, log := run(-1)
	if code != 0 || !strings.Contains(log, "starting at record 3200") || !strings.Contains(log, "committed") {
		t.Fatalf("the last run should resume at 3200 and commit: %d\n%s", code, log)
	}
	var want strings.Builder
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&want, "record %07d\n", i)
	}
	stored, _ := os.ReadFile(filepath.Join(g.files, "consumer/out"))
	if string(stored) != want.String() {
		t.Fatalf("the committed file is not every record once: %d bytes, want %d", len(stored), want.Len())
	}
}
