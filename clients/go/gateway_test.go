package sluice_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateway is `sluice serve` (the binary SLUICE_BIN names) on a free
// loopback port, in a data dir of its own.
type gateway struct {
	dir     string
	files   string
	address string
	cmd     *exec.Cmd
}

func startGateway(t *testing.T, config string) *gateway {
	t.Helper()
	bin := os.Getenv("SLUICE_BIN")
	if bin == "" {
		t.Fatal("SLUICE_BIN must name the sluice binary: cargo build, then SLUICE_BIN=$PWD/target/debug/sluice go test ./...")
	}
	dir := t.TempDir()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--admin-listen", "off"}
	if config != "" {
		path := filepath.Join(dir, "sluice.yaml")
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		address := regexp.MustCompile(`address=(\S+)`)
		lines := bufio.NewScanner(stderr)
		sent := false
		for lines.Scan() {
			if m := address.FindStringSubmatch(lines.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
	}()
	select {
	case address := <-found:
		return &gateway{dir: dir, files: filepath.Join(dir, "files"), address: address, cmd: cmd}
	case <-time.After(30 * time.Second):
		t.Fatal("sluice did not log its address within 30 s")
		return nil
	}
}

func (g *gateway) uri(name string) string {
	return "file://" + g.files + "/" + name
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// proxy forwards a loopback port to the gateway. cut drops every open
// connection at once; with flipEvery > 0 it follows the HTTP/2 frames
// towards the gateway and flips one byte in the middle of every
// flipEvery-th DATA frame of 1 KiB or more.
type proxy struct {
	address   string
	listener  net.Listener
	flipEvery int

	mu       sync.Mutex
	conns    []net.Conn
	upstream []*atomic.Int64
	seen     int
	flipped  atomic.Int64
}

func startProxy(t *testing.T, upstream string, flipEvery int) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{address: l.Addr().String(), listener: l, flipEvery: flipEvery}
	t.Cleanup(func() {
		l.Close()
		p.cut()
	})
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", upstream)
			if err != nil {
				in.Close()
				continue
			}
			counted := new(atomic.Int64)
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.upstream = append(p.upstream, counted)
			p.mu.Unlock()
			go func() {
				_, _ = io.Copy(in, out)
				in.Close()
			}()
			go p.towardsGateway(in, out, counted)
		}
	}()
	return p
}

func (p *proxy) towardsGateway(in, out net.Conn, counted *atomic.Int64) {
	defer out.Close()
	if p.flipEvery == 0 {
		n, _ := io.Copy(out, in)
		counted.Add(n)
		return
	}
	preface := make([]byte, 24)
	if _, err := io.ReadFull(in, preface); err != nil {
		return
	}
	if _, err := out.Write(preface); err != nil {
		return
	}
	header := make([]byte, 9)
	for {
		if _, err := io.ReadFull(in, header); err != nil {
			return
		}
		length := int(header[0])<<16 | int(header[1])<<8 | int(header[2])
		payload := make([]byte, length)
		if _, err := io.ReadFull(in, payload); err != nil {
			return
		}
		if header[3] == 0 && length >= 1024 {
			p.mu.Lock()
			p.seen++
			flip := p.seen%p.flipEvery == 0
			p.mu.Unlock()
			if flip {
				payload[length/2] ^= 0x40
				p.flipped.Add(1)
			}
		}
		if _, err := out.Write(append(header, payload...)); err != nil {
			return
		}
		counted.Add(int64(9 + length))
	}
}

func (p *proxy) cut() int {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return len(conns) / 2
}

// upstreamBytes is what each connection carried towards the gateway.
func (p *proxy) upstreamBytes() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int64, len(p.upstream))
	for i, c := range p.upstream {
		out[i] = c.Load()
	}
	return out
}
