// Command consumer is a worked example of a streaming consumer on sluice:
// it reads a replayable source (here a generated log whose record i is
// the same on every run, standing in for a Kafka partition or a NATS
// stream), writes one line per record to a file through sluice, and every
// -checkpoint-every records persists the file and stores, atomically and
// together, the source offset and the resume handle. Killed anywhere and
// started again, it recovers the file from the handle, rewinds the source
// to the stored offset, and goes on: the committed file holds every record
// exactly once.
//
//	go run ./examples/consumer -gateway 127.0.0.1:50051 \
//	    -out file:///tmp/sluice-data/files/consumer/out -checkpoint /tmp/consumer.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	sluice "github.com/sluice-gateway/sluice/clients/go"
)

// checkpoint is what the consumer stores after each persist: where the
// source stands and where the file stands, saved in one atomic write so
// that they never disagree.
type checkpoint struct {
	Offset int    `json:"offset"`
	Handle []byte `json:"handle"`
}

func record(i int) string { return fmt.Sprintf("record %07d\n", i) }

func load(path string) (*checkpoint, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var cp checkpoint
	return &cp, json.Unmarshal(data, &cp)
}

// store replaces the checkpoint file atomically (a temp file, fsynced,
// renamed over it, the directory fsynced).
func store(path string, cp checkpoint) error {
	data, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
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

func main() {
	gateway := flag.String("gateway", "127.0.0.1:50051", "the gateway's host:port")
	out := flag.String("out", "", "URI of the file to write, e.g. s3://bucket/consumer/out")
	checkpointPath := flag.String("checkpoint", "", "local checkpoint file")
	records := flag.Int("records", 10000, "records in the source")
	every := flag.Int("checkpoint-every", 500, "records between checkpoints")
	crashAfter := flag.Int("crash-after", -1, "exit abruptly (status 3) after this many records of this run, as a crash would")
	flag.Parse()
	if *out == "" || *checkpointPath == "" {
		log.Fatal("consumer: -out and -checkpoint are required")
	}
	ctx := context.Background()
	client, err := sluice.NewClient(*gateway)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	cp, err := load(*checkpointPath)
	if err != nil {
		log.Fatalf("consumer: reading the checkpoint: %v", err)
	}
	var stream *sluice.Stream
	offset := 0
	if cp == nil {
		stream, err = client.Open(ctx, *out)
	} else {
		// The file goes on at exactly the persisted position; bytes written
		// after it are discarded, and the source replays from the same
		// record.
		stream, err = client.Recover(ctx, cp.Handle)
		offset = cp.Offset
	}
	if err != nil {
		log.Fatalf("consumer: %v", err)
	}
	log.Printf("consumer: starting at record %d", offset)
	for done := 0; offset < *records; done++ {
		if done == *crashAfter {
			os.Exit(3)
		}
		if _, err := fmt.Fprint(stream, record(offset)); err != nil {
			log.Fatalf("consumer: write: %v", err)
		}
		offset++
		if offset%*every == 0 {
			handle, err := stream.Persist(ctx)
			if err != nil {
				log.Fatalf("consumer: persist: %v", err)
			}
			if err := store(*checkpointPath, checkpoint{Offset: offset, Handle: handle}); err != nil {
				log.Fatalf("consumer: checkpoint: %v", err)
			}
		}
	}
	committer, err := stream.CloseForCommit(ctx)
	if err != nil {
		log.Fatalf("consumer: close: %v", err)
	}
	// After a crash between this commit and the end of the run, the file
	// may be committed already: commit after recovery recognises that.
	committed, err := committer.CommitAfterRecovery(ctx)
	if err != nil {
		log.Fatalf("consumer: commit: %v", err)
	}
	fmt.Printf("committed %s: %d bytes, CRC32C %#08x\n", committed.Path, committed.Size, committed.CRC32C)
}
