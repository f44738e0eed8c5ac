package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"github.com/lathe-ml/lathe/tensor"
)

// openPTY returns the controller side of a new pseudo-terminal and the path of its terminal side.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var unlock int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ptmx.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		ptmx.Close()
		t.Skipf("unlocking the pseudo-terminal: %v", errno)
	}
	var n uint32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ptmx.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); errno != 0 {
		ptmx.Close()
		t.Skipf("naming the pseudo-terminal: %v", errno)
	}
	return ptmx, fmt.Sprintf("/dev/pts/%d", n)
}

// Progress appears on stderr when it is a terminal, and neither there with --quiet nor ever when stderr is a pipe.
func TestProgressOnlyOnTerminals(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.safetensors")
	writeModel(t, in, f32View("a", tensor.Shape{2}, 1, 2), f32View("b", tensor.Shape{2}, 3, 4))
	stderrOf := func(terminal bool, extra ...string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], append([]string{"cast", in, filepath.Join(dir, "out.safetensors"), "--dtype", "f16", "--force"}, extra...)...)
		cmd.Env = append(os.Environ(), "LATHE_RUN_MAIN=1")
		var pipe bytes.Buffer
		if !terminal {
			cmd.Stderr = &pipe
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v: %s", err, pipe.String())
			}
			return pipe.String()
		}
		ptmx, name := openPTY(t)
		defer ptmx.Close()
		tty, err := os.OpenFile(name, os.O_RDWR|syscall.O_NOCTTY, 0)
		if err != nil {
			t.Skipf("opening %s: %v", name, err)
		}
		cmd.Stderr = tty
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		tty.Close()
		var screen bytes.Buffer
		io.Copy(&screen, ptmx) // ends with EIO once the terminal side is closed
		return screen.String()
	}
	if got := stderrOf(true); !bytes.Contains([]byte(got), []byte("cast 2/2")) {
		t.Errorf("no progress on a terminal: %q", got)
	}
	if got := stderrOf(true, "--quiet"); got != "" {
		t.Errorf("progress despite --quiet: %q", got)
	}
	if got := stderrOf(false); got != "" {
		t.Errorf("progress written to a pipe: %q", got)
	}
}
