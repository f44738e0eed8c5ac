package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// `lathe cast IN -o - --dtype f32 | head -c 10`: the reader takes the first bytes and goes away while lathe is
// still writing. lathe must then die of SIGPIPE as cat does (the shell reports 141, and a pipeline's status is
// head's), printing nothing, after writing the same first bytes as to a file. TestStdoutWriteErrors covers a reader
// that is gone before the first write, where exit 2 is also accepted.
func TestHeadOfPipe(t *testing.T) {
	in := filepath.Join("..", "..", "internal", "demo", "tiny", "model.safetensors")
	file := filepath.Join(t.TempDir(), "out.safetensors")
	if msg, err := lathe("cast", in, file, "--dtype", "f32").CombinedOutput(); err != nil {
		t.Fatalf("cast to a file: %v\n%s", err, msg)
	}
	whole, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) < 1<<17 {
		t.Fatalf("the output (%d bytes) must be larger than a pipe's buffer for lathe to be writing when head exits", len(whole))
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := lathe("cast", in, "-o", "-", "--dtype", "f32")
	cmd.Stdout, cmd.Stderr = w, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	head := make([]byte, 10)
	_, rerr := io.ReadFull(r, head)
	r.Close()
	err = cmd.Wait()
	if rerr != nil || !bytes.Equal(head, whole[:10]) {
		t.Errorf("first bytes %x (%v), want %x as in the file", head, rerr, whole[:10])
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("lathe exited normally after its reader went away (%v)\n%s", err, stderr.String())
	}
	if ws := exit.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGPIPE {
		t.Errorf("want death by SIGPIPE, got %v", exit)
	}
	if stderr.Len() > 0 {
		t.Errorf("printed on the way out:\n%s", stderr.String())
	}
}
