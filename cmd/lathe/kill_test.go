package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lathe-ml/lathe/tensor"
)

// TestMain lets a test run the real lathe binary as a child process: the test binary re-executes itself with
// LATHE_RUN_MAIN set, so no separate build is needed.
func TestMain(m *testing.M) {
	if os.Getenv("LATHE_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// A lathe process killed with SIGKILL in the middle of writing leaves the target path as it was: absent, or the
// complete previous file. Only a hidden temporary file can remain.
func TestKilledWriteLeavesTargetIntact(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 64 MB file")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.safetensors")
	n := 1 << 24
	data := make([]byte, 4*n)
	for i := range data {
		data[i] = byte(i * 7)
	}
	writeModel(t, in, tensor.View{Name: "w", DType: tensor.F32, Shape: tensor.Shape{int64(n)}, Data: data})
	previous := []byte("the previous complete file")
	for _, existing := range []bool{false, true} {
		out := filepath.Join(dir, "out.safetensors")
		os.Remove(out)
		if existing {
			if err := os.WriteFile(out, previous, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(os.Args[0], "cast", in, out, "--dtype", "bf16")
		cmd.Env = append(os.Environ(), "LATHE_RUN_MAIN=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		tmpSeen := false
		deadline := time.Now().Add(20 * time.Second)
		for !tmpSeen && time.Now().Before(deadline) {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".out.safetensors.") && strings.HasSuffix(e.Name(), ".tmp") {
					if info, err := e.Info(); err == nil && info.Size() > 0 {
						tmpSeen = true
					}
				}
			}
			time.Sleep(time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if !tmpSeen {
			t.Fatalf("never saw the temporary file being written (process: %v)", err)
		}
		if err == nil {
			t.Skip("the cast finished before it could be killed; nothing to check on this machine")
		}
		got, statErr := os.ReadFile(out)
		switch {
		case !existing && !os.IsNotExist(statErr):
			t.Errorf("target exists after a killed write (%d bytes)", len(got))
		case existing && !bytes.Equal(got, previous):
			t.Errorf("the previous file was replaced by %d bytes from a killed write", len(got))
		}
	}
}
