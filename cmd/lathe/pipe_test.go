package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Writing a model to standard output must end well when the output cannot be written: a reader that went away
// (`lathe convert ... -o - | head -c 10`) gives the usual SIGPIPE death or exit 2, and a full disk gives exit 2 with
// the system's message; never a panic.
func TestStdoutWriteErrors(t *testing.T) {
	tiny := filepath.Join("..", "..", "internal", "demo", "tiny")
	args := []string{"convert", tiny, "-o", "-", "--outtype", "f32"}

	t.Run("EPIPE", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close() // the reader is gone before lathe writes
		var stderr bytes.Buffer
		cmd := lathe(args...)
		cmd.Stdout, cmd.Stderr = w, &stderr
		err = cmd.Run()
		w.Close()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("lathe succeeded writing to a closed pipe (%v)", err)
		}
		ws := exit.Sys().(syscall.WaitStatus)
		if !(ws.Signaled() && ws.Signal() == syscall.SIGPIPE) && exit.ExitCode() != 2 {
			t.Errorf("want death by SIGPIPE or exit 2, got %v\n%s", exit, stderr.String())
		}
		if strings.Contains(stderr.String(), "panic") {
			t.Errorf("panicked:\n%s", stderr.String())
		}
	})

	t.Run("ENOSPC", func(t *testing.T) {
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Skipf("no /dev/full on this system: %v", err)
		}
		defer full.Close()
		var stderr bytes.Buffer
		cmd := lathe(args...)
		cmd.Stdout, cmd.Stderr = full, &stderr
		err = cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Fatalf("want exit 2 writing to a full device, got %v\n%s", err, stderr.String())
		}
		if msg := stderr.String(); !strings.Contains(msg, "no space left on device") || strings.Contains(msg, "panic") {
			t.Errorf("unclear message for a full device:\n%s", msg)
		}
	})
}
